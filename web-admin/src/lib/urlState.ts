import { ORDER_SORTS, type OrderSort } from '../graphql/backoffice';
import { ORDER_STATUSES, type OrderStatus } from '../graphql/types';

export const PAGE_SIZES = [10, 25, 50, 100] as const;

export interface ListParams {
  page: number;
  limit: number;
  status: OrderStatus | null;
  q: string;
  sort: OrderSort;
  /** First and last UTC day of creation (YYYY-MM-DD), both included; '' for open. */
  from: string;
  to: string;
  /** A customer's email: sent as `q` (the API's one text filter), so it replaces the search. */
  customer: string;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
function day(v: string | null): string {
  if (!v || !DAY.test(v)) return '';
  const d = new Date(`${v}T00:00:00Z`);
  return Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== v ? '' : v;
}

export function readListParams(search = window.location.search): ListParams {
  const p = new URLSearchParams(search);
  const page = Number.parseInt(p.get('page') ?? '', 10);
  const limit = Number.parseInt(p.get('limit') ?? '', 10);
  const status = p.get('status');
  const sort = p.get('sort');
  return {
    page: Number.isFinite(page) && page >= 1 ? page : 1,
    limit: (PAGE_SIZES as readonly number[]).includes(limit) ? limit : 10,
    status: (ORDER_STATUSES as readonly string[]).includes(status ?? '') ? (status as OrderStatus) : null,
    q: (p.get('q') ?? '').slice(0, 100),
    sort: (ORDER_SORTS as readonly string[]).includes(sort ?? '') ? (sort as OrderSort) : 'NEWEST',
    from: day(p.get('from')),
    to: day(p.get('to')),
    customer: (p.get('customer') ?? '').slice(0, 100),
  };
}

/** Mirrors the list's filters into the address bar so a reload or a shared link keeps them. */
export function writeListParams(params: ListParams): void {
  const p = new URLSearchParams();
  if (params.page !== 1) p.set('page', String(params.page));
  if (params.limit !== 10) p.set('limit', String(params.limit));
  if (params.status) p.set('status', params.status);
  if (params.q) p.set('q', params.q);
  if (params.sort !== 'NEWEST') p.set('sort', params.sort);
  if (params.from) p.set('from', params.from);
  if (params.to) p.set('to', params.to);
  if (params.customer) p.set('customer', params.customer);
  const qs = p.toString();
  const url = `${window.location.pathname}${qs ? `?${qs}` : ''}`;
  if (url !== `${window.location.pathname}${window.location.search}`) window.history.replaceState(null, '', url);
}

/** The query's variables: the days as UTC bounds, [from 00:00, the day after `to` 00:00). */
export function listVariables(params: ListParams) {
  const next = (d: string) => new Date(Date.parse(`${d}T00:00:00Z`) + 86_400_000).toISOString();
  return {
    status: params.status,
    q: params.customer || params.q || null,
    page: params.page,
    limit: params.limit,
    sort: params.sort,
    createdFrom: params.from ? `${params.from}T00:00:00Z` : null,
    createdTo: params.to ? next(params.to) : null,
  };
}
