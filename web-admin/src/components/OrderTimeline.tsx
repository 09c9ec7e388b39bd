import { useQuery } from '@apollo/client';
import { useId } from 'react';
import { ORDER_HISTORY } from '../graphql/operations';
import type { OrderEvent, OrderEventKind } from '../graphql/types';
import { useLiveFeed } from '../lib/context';
import { formatDateTime } from '../lib/format';
import { useStore } from '../lib/store';
import { StatusBadge } from './StatusBadge';

interface Props {
  orderId: string;
  /** The heading's element and classes: the drawer and the order page differ. */
  heading?: 'h2' | 'h3';
  headingClass?: string;
  className?: string;
  testId?: string;
}

/** An order's history (Order.history), newest first, with what arrived live since it was
 *  read appended: each event once. Used by the drawer and the order page. */
export function OrderTimeline({
  orderId,
  heading: Heading = 'h3',
  headingClass = 'mb-2 text-sm font-semibold text-slate-900',
  className,
  testId = 'drawer-events',
}: Props) {
  const headingId = useId();
  const events = useStore(useLiveFeed().events).get(orderId) ?? [];
  const history = useQuery(ORDER_HISTORY, { variables: { id: orderId }, fetchPolicy: 'cache-and-network' });
  const timeline = mergeEvents(history.data?.order?.history ?? [], events);
  return (
    <section aria-labelledby={headingId} className={className}>
      <Heading id={headingId} className={headingClass}>
        History
      </Heading>
      {timeline.length === 0 ? (
        <p className="text-sm text-slate-500">{history.loading ? 'Loading…' : 'No events.'}</p>
      ) : (
        <ol className="relative space-y-3 border-l border-slate-200 pl-4" data-testid={testId}>
          {[...timeline].reverse().map((ev) => (
            <li key={ev.cursor} className="text-sm" data-testid="timeline-event" data-kind={ev.kind} data-cursor={ev.cursor}>
              <span aria-hidden="true" className="absolute -left-1 mt-1.5 size-2 rounded-full bg-slate-300" />
              <div className="flex flex-wrap items-center gap-2">
                <span className="font-medium text-slate-900">{KIND_LABEL[ev.kind]}</span>
                {ev.previousStatus ? (
                  <>
                    <StatusBadge status={ev.previousStatus} />
                    <span aria-label="to" className="text-slate-400">→</span>
                    <StatusBadge status={ev.status} />
                  </>
                ) : null}
                <span className="text-xs text-slate-500">v{ev.version}</span>
              </div>
              <p className="mt-0.5 text-xs text-slate-500">
                <time dateTime={ev.at}>{formatDateTime(ev.at)}</time> · {SOURCE_LABEL[ev.source]}
                {ev.actor ? ` (${ev.actor.email})` : ''}
              </p>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

const KIND_LABEL: Record<OrderEventKind, string> = {
  CREATED: 'Created',
  STATUS_CHANGED: 'Status changed',
  PAYMENT_INITIATED: 'Payment started',
  PAYMENT_SUCCEEDED: 'Payment succeeded',
  PAYMENT_FAILED: 'Payment failed',
  REFUND_NEEDED: 'Refund needed',
  REFUNDED: 'Refunded',
};

const SOURCE_LABEL: Record<OrderEvent['source'], string> = {
  USER: 'customer',
  ADMIN: 'admin',
  PAYMENT_PROVIDER: 'payment provider',
  SYSTEM: 'system',
};

function mergeEvents(stored: readonly OrderEvent[], live: readonly OrderEvent[]): OrderEvent[] {
  const known = new Set(stored.map((e) => e.cursor));
  return [...stored, ...live.filter((e) => !known.has(e.cursor))];
}
