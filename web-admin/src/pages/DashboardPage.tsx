import { useQuery } from '@apollo/client';
import { lazy, Suspense, useMemo } from 'react';
import { ORDER_STATS, STATUS_COUNTS } from '../graphql/backoffice';
import { ORDER_STATUSES, type OrderStatus } from '../graphql/types';
import { errorMessage } from '../lib/errors';
import { formatMoney } from '../lib/format';
import { useRefundsNeeded } from '../lib/refunds';
import { STATUS_DOT, STATUS_LABEL } from '../lib/status';
import type { DayFigure } from '../components/OrdersChart';
import { CARD, ErrorBox, Link, PageHeader } from '../components/ui';

// Chart.js is a chunk of its own: only the dashboard loads it.
const OrdersChart = lazy(() => import('../components/OrdersChart').then((m) => ({ default: m.OrdersChart })));

const DAYS = 30;
/** What counts as revenue: orders whose money was taken and not given back. */
const REVENUE: readonly OrderStatus[] = ['PAID', 'SHIPPED', 'DELIVERED'];

function range(): { from: string; to: string; days: string[] } {
  const now = new Date();
  const tomorrow = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  const start = tomorrow - DAYS * 86_400_000;
  const days = Array.from({ length: DAYS }, (_, i) => new Date(start + i * 86_400_000).toISOString().slice(0, 10));
  return { from: new Date(start).toISOString(), to: new Date(tomorrow).toISOString(), days };
}

export function DashboardPage() {
  const span = useMemo(range, []);
  const stats = useQuery(ORDER_STATS, { variables: { from: span.from, to: span.to }, fetchPolicy: 'cache-and-network' });
  const counts = useQuery(STATUS_COUNTS, { fetchPolicy: 'cache-and-network' });
  const refunds = useRefundsNeeded();

  const figures = useMemo<DayFigure[] | null>(() => {
    if (!stats.data) return null;
    const byDay = new Map(span.days.map((d) => [d, { day: d, orders: 0, revenueCents: 0 }]));
    for (const row of stats.data.orderStats) {
      const f = byDay.get(row.day);
      if (!f) continue;
      f.orders += row.orders;
      if (REVENUE.includes(row.status)) f.revenueCents += row.amountCents;
    }
    return [...byDay.values()];
  }, [stats.data, span.days]);

  const c = counts.data;
  const statusTotal = (s: OrderStatus) => (c ? c[s.toLowerCase() as Lowercase<OrderStatus>].total : null);
  const refundCents = refunds.items?.reduce((n, o) => n + (o.payment?.amountCents ?? 0), 0) ?? 0;

  return (
    <main id="main" className="mx-auto max-w-7xl px-4 py-6 sm:px-6 lg:py-8">
      <PageHeader title="Dashboard" />
      {stats.error && <ErrorBox>Could not load the figures: {errorMessage(stats.error)}</ErrorBox>}
      {counts.error && <ErrorBox>Could not load the counts: {errorMessage(counts.error)}</ErrorBox>}

      <section aria-labelledby="attention-h" className="mb-6 grid gap-4 sm:grid-cols-2">
        <h2 id="attention-h" className="sr-only">
          Needs attention
        </h2>
        <div className={`${CARD} p-4`} data-testid="card-dead-letters">
          <p className="text-sm font-medium text-slate-600">Failed payments waiting</p>
          <p className="mt-1 text-3xl font-semibold tabular-nums text-slate-900">{c ? c.deadLetters.total : '…'}</p>
          <Link to="/payments">Review dead letters</Link>
        </div>
        <div className={`${CARD} p-4`} data-testid="card-refunds">
          <p className="text-sm font-medium text-slate-600">Refunds needed</p>
          <p className="mt-1 text-3xl font-semibold tabular-nums text-slate-900">
            {refunds.items ? refunds.items.length : '…'}
            {refunds.items && refunds.items.length > 0 && <span className="ml-2 text-base font-normal text-slate-600">{formatMoney(refundCents)}</span>}
          </p>
          <Link to="/payments">Refund payments</Link>
        </div>
      </section>

      <section aria-labelledby="chart-h" className={`${CARD} mb-6 p-4`}>
        <h2 id="chart-h" className="mb-3 text-base font-semibold text-slate-900">
          Orders and revenue, last {DAYS} days (UTC)
        </h2>
        <Suspense fallback={<div className="h-64 animate-pulse rounded bg-slate-100 sm:h-72" aria-hidden="true" />}>
          {figures ? <OrdersChart days={figures} /> : <div className="h-64 animate-pulse rounded bg-slate-100 sm:h-72" aria-hidden="true" />}
        </Suspense>
        <p className="mt-2 text-xs text-slate-600">Revenue counts paid, shipped and delivered orders, by the day they were placed.</p>
      </section>

      <section aria-labelledby="counts-h" className={`${CARD} p-4`}>
        <h2 id="counts-h" className="mb-3 text-base font-semibold text-slate-900">
          Orders by status (all time)
        </h2>
        <ul className="grid grid-cols-2 gap-3 sm:grid-cols-5" data-testid="status-counts">
          {ORDER_STATUSES.map((s) => (
            <li key={s}>
              <Link to={`/orders?status=${s}`} className="block rounded-lg p-3 ring-1 ring-inset ring-slate-200 hover:bg-slate-50 focus-visible:outline-2 focus-visible:outline-indigo-600">
                <span className="flex items-center gap-1.5 text-sm text-slate-600">
                  <span aria-hidden="true" className={`size-2 rounded-full ${STATUS_DOT[s]}`} />
                  {STATUS_LABEL[s]}
                </span>
                <span className="mt-1 block text-2xl font-semibold tabular-nums text-slate-900" data-status={s}>
                  {statusTotal(s) ?? '…'}
                </span>
              </Link>
            </li>
          ))}
        </ul>
      </section>
    </main>
  );
}
