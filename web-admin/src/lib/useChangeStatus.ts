import { useApolloClient, useMutation } from '@apollo/client';
import { useCallback, useState } from 'react';
import { ORDER, ORDERS, UPDATE_ORDER_STATUS } from '../graphql/operations';
import type { Order, OrderStatus } from '../graphql/types';
import { errorMessage, hasCode } from './errors';
import { STATUS_LABEL } from './status';
import { toast } from './toast';

/** updateOrderStatus with the row's version, and the toasts and refetches around it. */
export function useChangeStatus() {
  const client = useApolloClient();
  const [mutate] = useMutation(UPDATE_ORDER_STATUS);
  const [pending, setPending] = useState<ReadonlySet<string>>(new Set());

  const change = useCallback(
    async (order: Pick<Order, 'id' | 'version'>, status: OrderStatus) => {
      const { id, version } = order;
      setPending((s) => new Set(s).add(id));
      try {
        const { data } = await mutate({ variables: { input: { id, status, version } } });
        const updated = data?.updateOrderStatus;
        toast('success', `Order #${id} is now ${STATUS_LABEL[updated?.status ?? status].toLowerCase()}`);
      } catch (err) {
        if (hasCode(err, 'UNAUTHENTICATED')) return; // the session ends; the login page says why
        if (hasCode(err, 'VERSION_CONFLICT')) {
          toast('error', `Order #${id} was changed by someone else — reloaded`);
          await Promise.allSettled([
            client.query({ query: ORDER, variables: { id }, fetchPolicy: 'network-only' }),
            client.refetchQueries({ include: [ORDERS] }),
          ]);
        } else {
          toast('error', `Order #${id}: ${errorMessage(err)}`);
          if (hasCode(err, 'INVALID_TRANSITION') || hasCode(err, 'NOT_FOUND')) {
            await client.refetchQueries({ include: [ORDERS] }).catch(() => undefined);
          }
        }
      } finally {
        setPending((s) => {
          const next = new Set(s);
          next.delete(id);
          return next;
        });
      }
    },
    [client, mutate],
  );

  return { change, pending };
}
