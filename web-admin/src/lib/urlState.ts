import { ORDER_STATUSES, type OrderStatus } from '../graphql/types';

export const PAGE_SIZES = [10, 25, 50, 100] as const;

export interface ListParams {
  page: number;
  limit: number;
  status: OrderStatus | null;
  q: string;
}

export function readListParams(search = window.location.search): ListParams {
  const p = new URLSearchParams(search);
  const page = Number.parseInt(p.get('page') ?? '', 10);
  const limit = Number.parseInt(p.get('limit') ?? '', 10);
  const status = p.get('status');
  return {
    page: Number.isFinite(page) && page >= 1 ? page : 1,
    limit: (PAGE_SIZES as readonly number[]).includes(limit) ? limit : 10,
    status: (ORDER_STATUSES as readonly string[]).includes(status ?? '') ? (status as OrderStatus) : null,
    q: (p.get('q') ?? '').slice(0, 100),
  };
}

/** Mirrors the list's filters into the address bar so a reload or a shared link keeps them. */
export function writeListParams(params: ListParams): void {
  const p = new URLSearchParams();
  if (params.page !== 1) p.set('page', String(params.page));
  if (params.limit !== 10) p.set('limit', String(params.limit));
  if (params.status) p.set('status', params.status);
  if (params.q) p.set('q', params.q);
  const qs = p.toString();
  const url = `${window.location.pathname}${qs ? `?${qs}` : ''}`;
  if (url !== `${window.location.pathname}${window.location.search}`) window.history.replaceState(null, '', url);
}
