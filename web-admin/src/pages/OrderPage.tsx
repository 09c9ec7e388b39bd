import { useQuery } from '@apollo/client';
import { useEffect, useRef, useState } from 'react';
import { ORDER_DETAIL } from '../graphql/backoffice';
import type { OrderStatus } from '../graphql/types';
import { useLiveFeed } from '../lib/context';
import { errorMessage, hasCode } from '../lib/errors';
import { formatDateTime, formatMoney } from '../lib/format';
import { useRefund } from '../lib/refunds';
import { useStore } from '../lib/store';
import { useChangeStatus } from '../lib/useChangeStatus';
import { PaymentBadge, StatusBadge } from '../components/StatusBadge';
import { OrderTimeline } from '../components/OrderTimeline';
import { OrderLines } from '../components/OrderLines';
import { StatusMenu } from '../components/StatusMenu';
import { CARD, ConfirmDialog, ErrorBox, Link, PRIMARY } from '../components/ui';

/** /admin/orders/:id: the order with its lines, payment and status actions (deep link). */
export function OrderPage({ orderId }: { orderId: string }) {
  const { data, error, loading, refetch } = useQuery(ORDER_DETAIL, { variables: { id: orderId }, fetchPolicy: 'cache-and-network' });
  const { change, pending } = useChangeStatus();
  const { refund, pending: refunding } = useRefund();
  const [confirmCancel, setConfirmCancel] = useState(false);
  const events = useStore(useLiveFeed().events).get(orderId) ?? [];
  const order = data?.order;

  // A live status change may flag the payment for a refund: read the order again.
  const seen = useRef(events.length);
  useEffect(() => {
    if (events.length === seen.current) return;
    seen.current = events.length;
    void refetch().catch(() => undefined);
  }, [events.length, refetch]);

  useEffect(() => {
    document.title = `Order #${orderId} · Admin`;
  }, [orderId]);

  const setStatus = async (next: OrderStatus) => {
    if (!order) return;
    await change(order, next);
    await refetch().catch(() => undefined);
  };

  return (
    <main id="main" className="mx-auto max-w-4xl px-4 py-6 sm:px-6 lg:py-8">
      <nav aria-label="Breadcrumb" className="mb-3 text-sm">
        <Link to="/orders">← Orders</Link>
      </nav>
      <div className="mb-5 flex flex-wrap items-center justify-between gap-3">
        <div>
          <h1 className="text-2xl font-semibold tracking-tight text-slate-900">
            Order <span className="font-mono">#{orderId}</span>
          </h1>
          {order && <p className="mt-1 text-sm text-slate-600" data-testid="order-customer">{order.user.email}</p>}
        </div>
        {order && (
          <div className="flex items-center gap-3">
            <StatusBadge status={order.status} />
            <span className="text-xs text-slate-600">version {order.version}</span>
            <StatusMenu
              orderId={order.id}
              status={order.status}
              busy={pending.has(order.id)}
              onSelect={(next) => (next === 'CANCELLED' ? setConfirmCancel(true) : void setStatus(next))}
            />
          </div>
        )}
      </div>

      {error && !order && !hasCode(error, 'NOT_FOUND') && <ErrorBox>{errorMessage(error)}</ErrorBox>}
      {!order && loading && <p className="text-sm text-slate-600">Loading…</p>}
      {!order && !loading && (!error || hasCode(error, 'NOT_FOUND')) && (
        <p className="text-sm text-slate-600" data-testid="order-missing">
          This order does not exist.
        </p>
      )}

      {order && (
        <div className="space-y-6">
          <section aria-labelledby="lines-h" className={`${CARD} p-4`}>
            <h2 id="lines-h" className="mb-2 text-base font-semibold text-slate-900">
              Lines
            </h2>
            <OrderLines items={order.items} amountCents={order.amountCents} testId="order-lines" />
            <dl className="mt-4 grid grid-cols-2 gap-3 text-sm sm:grid-cols-3">
              <div>
                <dt className="text-xs font-medium text-slate-600">Created</dt>
                <dd className="text-slate-900">{formatDateTime(order.createdAt)}</dd>
              </div>
              <div>
                <dt className="text-xs font-medium text-slate-600">Updated</dt>
                <dd className="text-slate-900">{formatDateTime(order.updatedAt)}</dd>
              </div>
              <div className="col-span-2 sm:col-span-1">
                <dt className="text-xs font-medium text-slate-600">Client token</dt>
                <dd className="break-all font-mono text-xs text-slate-900">{order.clientToken}</dd>
              </div>
            </dl>
          </section>

          <section aria-labelledby="payments-h" className={`${CARD} p-4`}>
            <h2 id="payments-h" className="mb-2 text-base font-semibold text-slate-900">
              Payments
            </h2>
            {order.payment ? (
              <div className="flex flex-wrap items-center justify-between gap-3 text-sm" data-testid="order-payment">
                <div className="flex flex-wrap items-center gap-3">
                  <span className="font-mono text-xs text-slate-800">{order.payment.id}</span>
                  <PaymentBadge status={order.payment.status} />
                  <span className="tabular-nums">{formatMoney(order.payment.amountCents)}</span>
                  {order.payment.needsRefund && <span className="text-sm font-medium text-rose-800">Needs a refund</span>}
                </div>
                {order.payment.needsRefund && (
                  <button
                    type="button"
                    className={PRIMARY}
                    disabled={refunding.has(order.payment.id)}
                    onClick={() => {
                      const p = order.payment!;
                      void refund(p.id, p.amountCents).then(() => refetch().catch(() => undefined));
                    }}
                  >
                    {refunding.has(order.payment.id) ? 'Refunding…' : 'Refund'}
                  </button>
                )}
              </div>
            ) : (
              <p className="text-sm text-slate-600">No payment yet.</p>
            )}
          </section>

          <OrderTimeline
            orderId={orderId}
            heading="h2"
            headingClass="mb-2 text-base font-semibold text-slate-900"
            className={`${CARD} p-4`}
            testId="order-history"
          />
        </div>
      )}

      {confirmCancel && order && (
        <ConfirmDialog
          title={`Cancel order #${order.id}?`}
          body={
            order.status === 'PAID'
              ? 'The order will not ship and cannot be reopened. Its payment will need a refund.'
              : 'The order will not ship and cannot be reopened.'
          }
          confirmLabel="Cancel order"
          onCancel={() => setConfirmCancel(false)}
          onConfirm={() => {
            setConfirmCancel(false);
            void setStatus('CANCELLED');
          }}
        />
      )}
    </main>
  );
}
