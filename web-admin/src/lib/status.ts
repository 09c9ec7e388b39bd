import type { OrderStatus, PaymentStatus } from '../graphql/types';

/** The order state machine, as the contract states it. */
export const NEXT_STATUSES: Record<OrderStatus, readonly OrderStatus[]> = {
  PENDING: ['PAID', 'CANCELLED'],
  PAID: ['SHIPPED', 'CANCELLED'],
  SHIPPED: ['DELIVERED'],
  DELIVERED: [],
  CANCELLED: [],
};

export const STATUS_LABEL: Record<OrderStatus, string> = {
  PENDING: 'Pending',
  PAID: 'Paid',
  SHIPPED: 'Shipped',
  DELIVERED: 'Delivered',
  CANCELLED: 'Cancelled',
};

export const STATUS_BADGE: Record<OrderStatus, string> = {
  PENDING: 'bg-amber-50 text-amber-800 ring-amber-600/25',
  PAID: 'bg-sky-50 text-sky-800 ring-sky-600/25',
  SHIPPED: 'bg-violet-50 text-violet-800 ring-violet-600/25',
  DELIVERED: 'bg-emerald-50 text-emerald-800 ring-emerald-600/25',
  CANCELLED: 'bg-slate-100 text-slate-600 ring-slate-500/25',
};

export const STATUS_DOT: Record<OrderStatus, string> = {
  PENDING: 'bg-amber-500',
  PAID: 'bg-sky-500',
  SHIPPED: 'bg-violet-500',
  DELIVERED: 'bg-emerald-500',
  CANCELLED: 'bg-slate-400',
};

export const PAYMENT_BADGE: Record<PaymentStatus, string> = {
  PENDING: 'bg-amber-50 text-amber-800 ring-amber-600/25',
  SUCCEEDED: 'bg-emerald-50 text-emerald-800 ring-emerald-600/25',
  FAILED: 'bg-rose-50 text-rose-800 ring-rose-600/25',
  REFUNDED: 'bg-indigo-50 text-indigo-800 ring-indigo-600/25',
};
