import { NetworkStatus, useQuery } from '@apollo/client';
import { useCallback, useEffect, useRef, useState } from 'react';
import { ORDERS } from '../graphql/operations';
import { ORDER_STATUSES, type Order, type OrderStatus } from '../graphql/types';
import { useLiveFeed } from '../lib/context';
import { errorMessage } from '../lib/errors';
import { useDebounced } from '../lib/hooks';
import { STATUS_LABEL } from '../lib/status';
import { useStore } from '../lib/store';
import { useChangeStatus } from '../lib/useChangeStatus';
import { listVariables, PAGE_SIZES, readListParams, writeListParams, type ListParams } from '../lib/urlState';
import { CreatedRangeFilter, CustomerFilter, SORT_CAPTION, SortHeader, SortSelect, sortFor } from './OrderListControls';
import { OrderDrawer } from './OrderDrawer';
import { OrderRow } from './OrderRow';
import { Pagination } from './Pagination';

const CONTROL =
  'block h-9 rounded-md border-0 bg-white px-3 text-sm text-slate-900 shadow-xs ring-1 ring-inset ring-slate-300 focus:ring-2 focus:ring-inset focus:ring-indigo-600 focus:outline-none';

const COLUMNS: { label: string; className?: string; sortable?: boolean }[] = [
  { label: 'Order', sortable: true },
  { label: 'Customer' },
  { label: 'Items' },
  { label: 'Amount', className: 'text-right', sortable: true },
  { label: 'Status' },
  { label: 'Version', className: 'text-center' },
  { label: 'Updated', sortable: true },
  { label: 'Actions', className: 'text-right' },
];

export function OrdersPage() {
  const [params, setParams] = useState<ListParams>(readListParams);
  const [search, setSearch] = useState(params.q);
  const q = useDebounced(search.trim(), 300);
  const [drawer, setDrawer] = useState<string | null>(null);
  const triggerRef = useRef<HTMLElement | null>(null);
  const { flashes, created } = useLiveFeed();
  const flashMap = useStore(flashes);
  const createdList = useStore(created);
  const { change, pending } = useChangeStatus();

  useEffect(() => {
    setParams((p) => (p.q === q ? p : { ...p, q, page: 1 }));
  }, [q]);
  useEffect(() => writeListParams(params), [params]);

  // "Next" follows the page's nextCursor (a keyset page: page 5,000 costs what page 1
  // costs); the cursor holds only for the list and the page it was given for.
  const listKey = JSON.stringify({ ...listVariables(params), page: null });
  const [cursor, setCursor] = useState<{ key: string; page: number; after: string } | null>(null);
  const after = cursor && cursor.key === listKey && cursor.page === params.page ? cursor.after : null;

  const { data, previousData, error, networkStatus, refetch } = useQuery(ORDERS, {
    variables: { ...listVariables(params), after },
    fetchPolicy: 'cache-and-network',
    nextFetchPolicy: 'cache-first',
    notifyOnNetworkStatusChange: true,
  });
  const result = (data ?? previousData)?.orders;
  const busy = networkStatus !== NetworkStatus.ready && networkStatus !== NetworkStatus.error;
  const stale = busy && !data;

  // A page past the end (after a filter or a page-size change) snaps back to the last one.
  useEffect(() => {
    if (data && data.orders.pages > 0 && params.page > data.orders.pages) {
      setParams((p) => ({ ...p, page: data.orders.pages }));
    }
  }, [data, params.page]);

  const openDrawer = useCallback((id: string, trigger: HTMLElement) => {
    triggerRef.current = trigger;
    setDrawer(id);
  }, []);
  const closeDrawer = useCallback(() => {
    setDrawer(null);
    triggerRef.current?.focus();
  }, []);
  const onChangeStatus = useCallback((order: Order, next: OrderStatus) => void change(order, next), [change]);

  // New orders, live: on top of page 1 when no filter hides them, else counted in a pill.
  const seenCreated = useRef(createdList.length);
  const [unseen, setUnseen] = useState(0);
  // A new order is PENDING, created now: it tops page 1 unless a filter or the sort says no.
  const today = new Date().toISOString().slice(0, 10);
  const showsNew =
    params.page === 1 &&
    !params.q &&
    !params.customer &&
    (params.status === null || params.status === 'PENDING') &&
    (params.sort === 'NEWEST' || params.sort === 'RECENTLY_UPDATED') &&
    (!params.from || params.from <= today) &&
    (!params.to || params.to >= today);
  useEffect(() => {
    const fresh = createdList.length - seenCreated.current;
    if (fresh <= 0) return;
    seenCreated.current = createdList.length;
    if (showsNew) {
      void refetch().catch(() => undefined);
    } else {
      setUnseen((n) => n + fresh);
    }
  }, [createdList.length, showsNew, refetch]);
  const showNew = () => {
    setUnseen(0);
    setSearch('');
    setParams((p) => ({ ...p, q: '', status: null, page: 1, sort: 'NEWEST', from: '', to: '', customer: '' }));
    void refetch().catch(() => undefined);
  };
  useEffect(() => {
    if (showsNew) setUnseen(0);
  }, [showsNew]);

  const nextCursor = data?.orders.nextCursor ?? null;
  const onNext = () => {
    if (nextCursor) setCursor({ key: listKey, page: params.page + 1, after: nextCursor });
    setParams((p) => ({ ...p, page: p.page + 1 }));
  };

  const from = result && result.total ? (result.page - 1) * result.limit + 1 : 0;
  const to = result ? Math.min(result.page * result.limit, result.total) : 0;
  const filtered = Boolean(params.q || params.status || params.from || params.to || params.customer);

  return (
    <main id="orders" className="mx-auto max-w-7xl px-4 py-6 sm:px-6 lg:py-8">
      <div className="mb-5 flex flex-wrap items-end justify-between gap-3">
        <div>
          <h1 className="text-2xl font-semibold tracking-tight text-slate-900">Orders</h1>
          <p className="mt-1 text-sm text-slate-500" aria-live="polite" data-testid="orders-summary">
            {result ? (result.total ? `Showing ${from}–${to} of ${result.totalIsExact ? '' : 'about '}${result.total}` : 'No orders to show') : 'Loading orders…'}
          </p>
        </div>
        <button
          type="button"
          onClick={() => void refetch().catch(() => undefined)}
          disabled={busy}
          className="inline-flex h-9 items-center gap-2 rounded-md bg-white px-3 text-sm font-medium text-slate-700 shadow-xs ring-1 ring-inset ring-slate-300 hover:bg-slate-50 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600 disabled:opacity-60"
        >
          {/* Drawn with strokes: the old filled path rendered as a blob (issue 17). */}
          <svg aria-hidden="true" viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth={2} strokeLinecap="round" strokeLinejoin="round" className={`size-4 text-slate-500 ${busy ? 'animate-spin' : ''}`} data-testid="refresh-icon">
            <path d="M20 11a8 8 0 1 0-2.3 5.7" />
            <path d="M20 4v7h-7" />
          </svg>
          Refresh
        </button>
      </div>

      <div role="search" className="mb-4 flex flex-wrap items-end gap-3">
        <div className="min-w-0 flex-[1_1_16rem]">
          <label htmlFor="orders-search" className="mb-1 block text-xs font-medium text-slate-600">
            Search
          </label>
          <div className="relative">
            <svg aria-hidden="true" viewBox="0 0 20 20" fill="currentColor" className="pointer-events-none absolute left-2.5 top-2.5 size-4 text-slate-400">
              <path fillRule="evenodd" d="M9 3.5a5.5 5.5 0 1 0 0 11 5.5 5.5 0 0 0 0-11ZM2 9a7 7 0 1 1 12.45 4.39l3.08 3.08a.75.75 0 1 1-1.06 1.06l-3.08-3.08A7 7 0 0 1 2 9Z" clipRule="evenodd" />
            </svg>
            <input
              id="orders-search"
              type="search"
              value={search}
              maxLength={100}
              onChange={(e) => setSearch(e.target.value)}
              disabled={Boolean(params.customer)}
              placeholder={params.customer ? 'The customer filter replaces the search' : 'Order id, SKU or customer email'}
              className={`${CONTROL} w-full pl-8`}
            />
          </div>
        </div>
        <div>
          <label htmlFor="orders-status" className="mb-1 block text-xs font-medium text-slate-600">
            Status
          </label>
          <select
            id="orders-status"
            value={params.status ?? ''}
            onChange={(e) => setParams((p) => ({ ...p, status: (e.target.value || null) as OrderStatus | null, page: 1 }))}
            className={`${CONTROL} pr-8`}
          >
            <option value="">All statuses</option>
            {ORDER_STATUSES.map((s) => (
              <option key={s} value={s}>
                {STATUS_LABEL[s]}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor="orders-limit" className="mb-1 block text-xs font-medium text-slate-600">
            Per page
          </label>
          <select
            id="orders-limit"
            value={params.limit}
            onChange={(e) => setParams((p) => ({ ...p, limit: Number(e.target.value), page: 1 }))}
            className={`${CONTROL} pr-8`}
          >
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </div>
        <SortSelect sort={params.sort} className={CONTROL} onChange={(sort) => setParams((p) => ({ ...p, sort, page: 1 }))} />
        <CustomerFilter value={params.customer} className={CONTROL} onChange={(customer) => setParams((p) => ({ ...p, customer, page: 1 }))} />
        <CreatedRangeFilter
          from={params.from}
          to={params.to}
          className={CONTROL}
          onChange={(from, to) => setParams((p) => ({ ...p, from, to, page: 1 }))}
        />
        {filtered && (
          <button
            type="button"
            onClick={() => {
              setSearch('');
              setParams((p) => ({ ...p, q: '', status: null, from: '', to: '', customer: '', page: 1 }));
            }}
            className="h-9 rounded-md px-2 text-sm font-medium text-indigo-700 hover:text-indigo-500 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600"
          >
            Clear filters
          </button>
        )}
      </div>

      {unseen > 0 && (
        <div className="mb-4 flex justify-center">
          <button
            type="button"
            onClick={showNew}
            data-testid="new-orders-pill"
            className="inline-flex items-center gap-1.5 rounded-full bg-indigo-600 px-3.5 py-1.5 text-sm font-medium text-white shadow-sm hover:bg-indigo-500 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600"
          >
            {unseen === 1 ? '1 new order' : `${unseen} new orders`} — show
          </button>
        </div>
      )}

      {error && !busy && (
        <div role="alert" className="mb-4 flex flex-wrap items-center justify-between gap-2 rounded-lg bg-rose-50 px-4 py-3 text-sm text-rose-800 ring-1 ring-inset ring-rose-600/20">
          <span>Could not load orders: {errorMessage(error)}</span>
          <button type="button" onClick={() => void refetch().catch(() => undefined)} className="font-medium underline focus-visible:outline-2 focus-visible:outline-rose-600">
            Try again
          </button>
        </div>
      )}

      <div className="relative overflow-hidden rounded-xl bg-white shadow-sm ring-1 ring-slate-900/5" aria-busy={busy}>
        {busy && result && <div aria-hidden="true" className="absolute inset-x-0 top-0 z-10 h-0.5 animate-progress bg-indigo-500" />}
        <table className="block w-full lg:table" data-testid="orders-table">
          <caption className="sr-only">Orders, {SORT_CAPTION[params.sort]}</caption>
          <thead className="hidden border-b border-slate-200 bg-slate-50/80 lg:table-header-group">
            <tr>
              {COLUMNS.map((c) => (
                <th
                  key={c.label}
                  scope="col"
                  aria-sort={c.sortable ? sortFor(c.label, params.sort).ariaSort : undefined}
                  className={`px-4 py-2.5 text-left text-xs font-semibold uppercase tracking-wide text-slate-500 ${c.className ?? ''}`}
                >
                  {c.label === 'Actions' ? (
                    <span className="sr-only">Actions</span>
                  ) : c.sortable ? (
                    <SortHeader label={c.label} sort={params.sort} onSort={(sort) => setParams((p) => ({ ...p, sort, page: 1 }))} />
                  ) : (
                    c.label
                  )}
                </th>
              ))}
            </tr>
          </thead>
          <tbody className={`block divide-y divide-slate-100 lg:table-row-group ${stale ? 'opacity-60 transition-opacity' : ''}`}>
            {!result && !error && <SkeletonRows count={Math.min(params.limit, 10)} />}
            {result?.items.map((order) => (
              <OrderRow
                key={order.id}
                order={order}
                flash={flashMap.get(order.id)}
                busy={pending.has(order.id)}
                onOpen={openDrawer}
                onChangeStatus={onChangeStatus}
              />
            ))}
          </tbody>
        </table>
        {result && result.items.length === 0 && (
          <div className="flex flex-col items-center gap-2 px-6 py-16 text-center" data-testid="empty-state">
            <svg aria-hidden="true" viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth={1.5} className="size-10 text-slate-300">
              <path strokeLinecap="round" strokeLinejoin="round" d="M20.25 7.5l-.625 10.632a2.25 2.25 0 0 1-2.247 2.118H6.622a2.25 2.25 0 0 1-2.247-2.118L3.75 7.5m8.25 3v6.75m0 0-3-3m3 3 3-3M3.375 7.5h17.25c.621 0 1.125-.504 1.125-1.125v-1.5c0-.621-.504-1.125-1.125-1.125H3.375c-.621 0-1.125.504-1.125 1.125v1.5c0 .621.504 1.125 1.125 1.125Z" />
            </svg>
            <p className="text-sm font-medium text-slate-900">No orders match</p>
            <p className="text-sm text-slate-500">{filtered ? 'Try another search or status.' : 'Orders will appear here as customers place them.'}</p>
          </div>
        )}
      </div>

      {result && result.pages > 1 && (
        <div className="mt-4 flex flex-wrap items-center justify-between gap-3">
          <p className="text-sm text-slate-500">
            Page <span className="font-medium text-slate-700">{result.page}</span> of <span className="font-medium text-slate-700">{result.pages}</span>
          </p>
          <Pagination page={params.page} pages={result.pages} onPage={(page) => setParams((p) => ({ ...p, page }))} onNext={onNext} />
        </div>
      )}

      {drawer && <OrderDrawer orderId={drawer} onClose={closeDrawer} onChangeStatus={onChangeStatus} pending={pending} />}
    </main>
  );
}

function SkeletonRows({ count }: { count: number }) {
  return (
    <>
      {Array.from({ length: count }, (_, i) => (
        <tr key={i} className="block px-4 py-4 lg:table-row lg:p-0" aria-hidden="true" data-testid="skeleton-row">
          {COLUMNS.map((c, j) => (
            <td key={c.label} className={`${j > 2 ? 'hidden lg:table-cell' : 'block lg:table-cell'} py-1 lg:px-4 lg:py-4`}>
              <div className={`h-3.5 animate-pulse rounded bg-slate-200/80 ${j === 2 ? 'w-40' : j === 1 ? 'w-36' : 'w-14'}`} />
            </td>
          ))}
        </tr>
      ))}
    </>
  );
}
