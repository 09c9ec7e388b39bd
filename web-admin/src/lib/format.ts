import type { OrderItem } from '../graphql/types';

const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const time = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

export function formatMoney(cents: number): string {
  return money.format(cents / 100);
}

function toDate(iso: string): Date | null {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function formatDateTime(iso: string): string {
  const d = toDate(iso);
  return d ? dateTime.format(d) : iso;
}

export function formatTime(iso: string): string {
  const d = toDate(iso);
  return d ? time.format(d) : iso;
}

/** "2× WIDGET-001, 1× GADGET-002" */
export function summarizeItems(items: readonly OrderItem[]): string {
  return items.map((i) => `${i.qty}× ${i.sku}`).join(', ');
}
