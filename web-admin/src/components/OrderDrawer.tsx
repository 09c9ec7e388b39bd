import { useQuery } from '@apollo/client';
import { useEffect, useId, useRef, type KeyboardEvent } from 'react';
import { ORDER } from '../graphql/operations';
import type { Order, OrderStatus } from '../graphql/types';
import { useLiveFeed } from '../lib/context';
import { errorMessage } from '../lib/errors';
import { formatDateTime, formatMoney } from '../lib/format';
import { useStore } from '../lib/store';
import { PaymentBadge, StatusBadge } from './StatusBadge';
import { OrderTimeline } from './OrderTimeline';
import { OrderLines } from './OrderLines';
import { StatusMenu } from './StatusMenu';

interface Props {
  orderId: string;
  onClose: () => void;
  onChangeStatus: (order: Order, next: OrderStatus) => void;
  pending: ReadonlySet<string>;
}

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea, [tabindex]:not([tabindex="-1"])';

export function OrderDrawer({ orderId, onClose, onChangeStatus, pending }: Props) {
  const titleId = useId();
  const panelRef = useRef<HTMLDivElement>(null);
  const closeRef = useRef<HTMLButtonElement>(null);
  const events = useStore(useLiveFeed().events).get(orderId) ?? [];
  const { data, error, loading, refetch } = useQuery(ORDER, {
    variables: { id: orderId },
    fetchPolicy: 'cache-and-network',
    nextFetchPolicy: 'cache-first',
  });
  const order = data?.order;

  useEffect(() => closeRef.current?.focus(), []);

  // A live event changes the status here already; fetch again for the payment it implies.
  const seenEvents = useRef(events.length);
  useEffect(() => {
    if (events.length === seenEvents.current) return;
    seenEvents.current = events.length;
    void refetch().catch(() => undefined);
  }, [events.length, refetch]);

  useEffect(() => {
    const previous = document.body.style.overflow;
    document.body.style.overflow = 'hidden';
    return () => {
      document.body.style.overflow = previous;
    };
  }, []);

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      onClose();
      return;
    }
    if (e.key !== 'Tab' || !panelRef.current) return;
    const nodes = Array.from(panelRef.current.querySelectorAll<HTMLElement>(FOCUSABLE));
    const first = nodes[0];
    const last = nodes[nodes.length - 1];
    if (!first || !last) return;
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  };

  return (
    <div className="fixed inset-0 z-40" onKeyDown={onKeyDown}>
      <div className="absolute inset-0 bg-slate-900/30 animate-fade-in" aria-hidden="true" onClick={onClose} />
      <div
        ref={panelRef}
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        data-testid="order-drawer"
        className="absolute inset-y-0 right-0 flex w-full max-w-md flex-col bg-white shadow-2xl animate-slide-in"
      >
        <div className="flex items-start justify-between gap-3 border-b border-slate-200 px-5 py-4">
          <div>
            <h2 id={titleId} className="text-lg font-semibold tracking-tight text-slate-900">
              Order <span className="font-mono">#{orderId}</span>
            </h2>
            {order && <p className="mt-0.5 text-sm text-slate-500">{order.user.email}</p>}
          </div>
          <button
            ref={closeRef}
            type="button"
            onClick={onClose}
            aria-label="Close details"
            className="-m-1 rounded-md p-1.5 text-slate-400 hover:bg-slate-100 hover:text-slate-700 focus-visible:outline-2 focus-visible:outline-indigo-600"
          >
            <svg aria-hidden="true" viewBox="0 0 20 20" fill="currentColor" className="size-5">
              <path d="M6.28 5.22a.75.75 0 0 0-1.06 1.06L8.94 10l-3.72 3.72a.75.75 0 1 0 1.06 1.06L10 11.06l3.72 3.72a.75.75 0 1 0 1.06-1.06L11.06 10l3.72-3.72a.75.75 0 0 0-1.06-1.06L10 8.94 6.28 5.22Z" />
            </svg>
          </button>
        </div>

        <div className="flex-1 space-y-6 overflow-y-auto px-5 py-5">
          {error && !order && (
            <p role="alert" className="rounded-md bg-rose-50 px-3 py-2 text-sm text-rose-800">
              {errorMessage(error)}
            </p>
          )}
          {!order && loading && <p className="text-sm text-slate-500">Loading…</p>}
          {!order && !loading && !error && <p className="text-sm text-slate-500">This order does not exist.</p>}
          {order && (
            <>
              <section aria-label="Summary" className="flex flex-wrap items-center justify-between gap-3">
                <div className="flex items-center gap-3">
                  <StatusBadge status={order.status} />
                  <span className="text-xs text-slate-500">version {order.version}</span>
                </div>
                <StatusMenu orderId={order.id} status={order.status} busy={pending.has(order.id)} onSelect={(next) => onChangeStatus(order, next)} />
              </section>

              <dl className="grid grid-cols-2 gap-x-4 gap-y-3 text-sm">
                <Field label="Created">{formatDateTime(order.createdAt)}</Field>
                <Field label="Updated">{formatDateTime(order.updatedAt)}</Field>
                <Field label="Client token" wide>
                  <span className="break-all font-mono text-xs">{order.clientToken}</span>
                </Field>
              </dl>

              <section aria-labelledby={`${titleId}-lines`}>
                <h3 id={`${titleId}-lines`} className="mb-2 text-sm font-semibold text-slate-900">
                  Lines
                </h3>
                <OrderLines items={order.items} amountCents={order.amountCents} amountTestId="drawer-amount" />
              </section>

              <section aria-labelledby={`${titleId}-payment`}>
                <h3 id={`${titleId}-payment`} className="mb-2 text-sm font-semibold text-slate-900">
                  Payment
                </h3>
                {order.payment ? (
                  <dl className="grid grid-cols-2 gap-x-4 gap-y-3 rounded-lg bg-slate-50 p-3 text-sm ring-1 ring-inset ring-slate-200" data-testid="drawer-payment">
                    <Field label="Payment id" wide>
                      <span className="break-all font-mono text-xs">{order.payment.id}</span>
                    </Field>
                    <Field label="Status">
                      <PaymentBadge status={order.payment.status} />
                    </Field>
                    <Field label="Amount">{formatMoney(order.payment.amountCents)}</Field>
                  </dl>
                ) : (
                  <p className="text-sm text-slate-500">No payment yet.</p>
                )}
              </section>

              <OrderTimeline orderId={orderId} />
            </>
          )}
        </div>
      </div>
    </div>
  );
}

function Field({ label, wide, children }: { label: string; wide?: boolean; children: React.ReactNode }) {
  return (
    <div className={wide ? 'col-span-2' : undefined}>
      <dt className="text-xs font-medium text-slate-500">{label}</dt>
      <dd className="mt-0.5 text-slate-900">{children}</dd>
    </div>
  );
}
