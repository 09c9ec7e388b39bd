import { useMutation, useQuery } from '@apollo/client';
import { useState } from 'react';
import { DEAD_LETTERS, RETRY_DEAD_LETTER } from '../graphql/backoffice';
import { errorMessage, hasCode } from '../lib/errors';
import { formatDateTime, formatMoney } from '../lib/format';
import { useRefund, useRefundsNeeded } from '../lib/refunds';
import { toast } from '../lib/toast';
import { Pagination } from '../components/Pagination';
import { BUTTON, CARD, ErrorBox, Link, PageHeader, PRIMARY } from '../components/ui';

const LIMIT = 20;
const TH = 'px-4 py-2.5 text-left text-xs font-semibold uppercase tracking-wide text-slate-600';
const TD = 'px-4 py-3 align-top text-sm';

/** Payments needing attention: dead letters to retry, and refunds to make. */
export function PaymentsPage() {
  const [page, setPage] = useState(1);
  const dead = useQuery(DEAD_LETTERS, { variables: { page, limit: LIMIT }, fetchPolicy: 'cache-and-network' });
  const [retry] = useMutation(RETRY_DEAD_LETTER);
  const [retrying, setRetrying] = useState<string | null>(null);
  const refunds = useRefundsNeeded();
  const { refund, pending } = useRefund();
  const letters = dead.data?.paymentDeadLetters;

  const onRetry = async (id: string, paymentId: string) => {
    setRetrying(id);
    try {
      const { data } = await retry({ variables: { input: { id } } });
      const status = data?.retryDeadLetter.status;
      toast(status === 'FAILED' ? 'error' : 'success', `Payment ${paymentId} retried: ${status?.toLowerCase() ?? 'sent'}`);
    } catch (err) {
      if (!hasCode(err, 'UNAUTHENTICATED')) toast('error', `Retry of payment ${paymentId}: ${errorMessage(err)}`);
    } finally {
      setRetrying(null);
      await dead.refetch().catch(() => undefined);
      refunds.reload();
    }
  };

  return (
    <main id="main" className="mx-auto max-w-7xl px-4 py-6 sm:px-6 lg:py-8">
      <PageHeader title="Payments needing attention">
        <button
          type="button"
          className={BUTTON}
          onClick={() => {
            void dead.refetch().catch(() => undefined);
            refunds.reload();
          }}
        >
          Refresh
        </button>
      </PageHeader>

      <section aria-labelledby="refunds-h" className="mb-8">
        <h2 id="refunds-h" className="mb-1 text-lg font-semibold text-slate-900">
          Refunds needed
        </h2>
        <p className="mb-3 text-sm text-slate-600">Payments of cancelled orders whose money the customer has not had back.</p>
        {refunds.error != null && <ErrorBox>Could not load the refunds: {errorMessage(refunds.error)}</ErrorBox>}
        <div className={`${CARD} overflow-x-auto`}>
          <table className="w-full" data-testid="refunds-table">
            <thead className="border-b border-slate-200 bg-slate-50">
              <tr>
                <th scope="col" className={TH}>Order</th>
                <th scope="col" className={TH}>Customer</th>
                <th scope="col" className={`${TH} text-right`}>Amount</th>
                <th scope="col" className={TH}>
                  <span className="sr-only">Action</span>
                </th>
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-100">
              {refunds.items?.map((o) => (
                <tr key={o.id} data-testid={`refund-row-${o.id}`}>
                  <td className={TD}>
                    <Link to={`/orders/${o.id}`}>#{o.id}</Link>
                  </td>
                  <td className={`${TD} max-w-48 truncate text-slate-700`}>{o.user.email}</td>
                  <td className={`${TD} text-right tabular-nums`}>{formatMoney(o.payment!.amountCents)}</td>
                  <td className={`${TD} text-right`}>
                    <button
                      type="button"
                      className={PRIMARY}
                      disabled={pending.has(o.payment!.id)}
                      aria-label={`Refund ${formatMoney(o.payment!.amountCents)} for order #${o.id}`}
                      onClick={() => void refund(o.payment!.id, o.payment!.amountCents).then(refunds.reload)}
                    >
                      {pending.has(o.payment!.id) ? 'Refunding…' : 'Refund'}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {refunds.items?.length === 0 && <p className="px-4 py-6 text-center text-sm text-slate-600">No refund is needed.</p>}
          {!refunds.items && refunds.error == null && <p className="px-4 py-6 text-center text-sm text-slate-600">Loading…</p>}
          {refunds.truncated && <p className="px-4 py-3 text-sm text-slate-600">Only the 2,000 most recently updated cancelled orders were searched.</p>}
        </div>
      </section>

      <section aria-labelledby="dead-h">
        <h2 id="dead-h" className="mb-1 text-lg font-semibold text-slate-900">
          Failed payments (dead letters)
        </h2>
        <p className="mb-3 text-sm text-slate-600">Payments and refunds the provider refused after every attempt, newest first.</p>
        {dead.error && <ErrorBox>Could not load the dead letters: {errorMessage(dead.error)}</ErrorBox>}
        <div className={`${CARD} overflow-x-auto`}>
          <table className="w-full" data-testid="dead-letters-table">
            <thead className="border-b border-slate-200 bg-slate-50">
              <tr>
                <th scope="col" className={TH}>Order</th>
                <th scope="col" className={TH}>Payment</th>
                <th scope="col" className={TH}>Error</th>
                <th scope="col" className={`${TH} text-right`}>Attempts</th>
                <th scope="col" className={TH}>Failed</th>
                <th scope="col" className={TH}>
                  <span className="sr-only">Action</span>
                </th>
              </tr>
            </thead>
            <tbody className="divide-y divide-slate-100">
              {letters?.items.map((d) => (
                <tr key={d.id} data-testid={`dead-letter-${d.id}`}>
                  <td className={TD}>
                    <Link to={`/orders/${d.orderId}`}>#{d.orderId}</Link>
                  </td>
                  <td className={`${TD} font-mono text-xs text-slate-800`}>{d.paymentId}</td>
                  <td className={`${TD} max-w-md break-words text-rose-800`}>{d.lastError}</td>
                  <td className={`${TD} text-right tabular-nums`}>{d.attempts}</td>
                  <td className={`${TD} whitespace-nowrap text-slate-600`}>
                    {formatDateTime(d.createdAt)}
                    {d.retriedAt && <span className="block text-xs">retried {formatDateTime(d.retriedAt)}</span>}
                  </td>
                  <td className={`${TD} text-right`}>
                    <button
                      type="button"
                      className={BUTTON}
                      disabled={retrying !== null}
                      aria-label={`Retry payment ${d.paymentId} of order #${d.orderId}`}
                      onClick={() => void onRetry(d.id, d.paymentId)}
                    >
                      {retrying === d.id ? 'Retrying…' : 'Retry'}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {letters?.items.length === 0 && <p className="px-4 py-6 text-center text-sm text-slate-600">No failed payment is waiting.</p>}
        </div>
        {letters && letters.pages > 1 && (
          <div className="mt-4 flex justify-end">
            <Pagination page={page} pages={letters.pages} onPage={setPage} />
          </div>
        )}
      </section>
    </main>
  );
}
