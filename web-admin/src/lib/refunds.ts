import { useApolloClient, useMutation } from '@apollo/client';
import { useCallback, useEffect, useState } from 'react';
import { CANCELLED_ORDERS, REFUND_PAYMENT, type CancelledOrder } from '../graphql/backoffice';
import { errorMessage, hasCode } from './errors';
import { formatMoney } from './format';
import { toast } from './toast';

/** At most this many pages of 100 cancelled orders are read for the list of refunds needed. */
const MAX_PAGES = 20;

/**
 * Payments that need a refund. The API has no list of them: they are the payments with
 * `needsRefund` on CANCELLED orders (cancelling a PAID order flags its payment), read here
 * page by page, 100 orders at a time.
 */
export function useRefundsNeeded() {
  const client = useApolloClient();
  const [state, setState] = useState<{ items: CancelledOrder[] | null; error: unknown; truncated: boolean }>({ items: null, error: null, truncated: false });
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let live = true;
    (async () => {
      const found: CancelledOrder[] = [];
      let page = 1;
      let pages = 1;
      while (page <= Math.min(pages, MAX_PAGES)) {
        const { data } = await client.query({ query: CANCELLED_ORDERS, variables: { page }, fetchPolicy: 'network-only' });
        pages = data.orders.pages;
        found.push(...data.orders.items.filter((o) => o.payment?.needsRefund));
        page += 1;
      }
      if (live) setState({ items: found, error: null, truncated: pages > MAX_PAGES });
    })().catch((error: unknown) => {
      if (live) setState((s) => ({ ...s, error }));
    });
    return () => {
      live = false;
    };
  }, [client, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** refundPayment with its toasts; resolves true when the payment is REFUNDED. */
export function useRefund() {
  const [mutate] = useMutation(REFUND_PAYMENT);
  const [pending, setPending] = useState<ReadonlySet<string>>(new Set());
  const refund = useCallback(
    async (paymentId: string, amountCents: number): Promise<boolean> => {
      setPending((s) => new Set(s).add(paymentId));
      try {
        const { data } = await mutate({ variables: { input: { paymentId } } });
        const ok = data?.refundPayment.status === 'REFUNDED';
        toast(ok ? 'success' : 'error', ok ? `Refunded ${formatMoney(amountCents)} (payment ${paymentId})` : `Payment ${paymentId} was not refunded`);
        return ok;
      } catch (err) {
        if (!hasCode(err, 'UNAUTHENTICATED')) toast('error', `Refund of payment ${paymentId}: ${errorMessage(err)}`);
        return false;
      } finally {
        setPending((s) => {
          const next = new Set(s);
          next.delete(paymentId);
          return next;
        });
      }
    },
    [mutate],
  );
  return { refund, pending };
}
