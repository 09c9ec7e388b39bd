import { useEffect, useState } from 'react';
import type { OrderSort } from '../graphql/backoffice';
import { useDebounced } from '../lib/hooks';

// The orders list's sort headers and its date-range and customer filters (issue 17).

export const SORT_CAPTION: Record<OrderSort, string> = {
  NEWEST: 'newest first',
  OLDEST: 'oldest first',
  RECENTLY_UPDATED: 'recently updated first',
  AMOUNT_HIGH: 'highest amount first',
  AMOUNT_LOW: 'lowest amount first',
};

/** Per sortable column: the sort a click gives, and what aria-sort says now. */
export function sortFor(label: string, sort: OrderSort): { next: OrderSort; ariaSort: 'ascending' | 'descending' | 'none' } {
  switch (label) {
    case 'Order':
      if (sort === 'NEWEST') return { next: 'OLDEST', ariaSort: 'descending' };
      if (sort === 'OLDEST') return { next: 'NEWEST', ariaSort: 'ascending' };
      return { next: 'NEWEST', ariaSort: 'none' };
    case 'Amount':
      if (sort === 'AMOUNT_HIGH') return { next: 'AMOUNT_LOW', ariaSort: 'descending' };
      if (sort === 'AMOUNT_LOW') return { next: 'AMOUNT_HIGH', ariaSort: 'ascending' };
      return { next: 'AMOUNT_HIGH', ariaSort: 'none' };
    case 'Updated':
      return sort === 'RECENTLY_UPDATED' ? { next: 'NEWEST', ariaSort: 'descending' } : { next: 'RECENTLY_UPDATED', ariaSort: 'none' };
    default:
      return { next: sort, ariaSort: 'none' };
  }
}

export function SortHeader({ label, sort, onSort }: { label: string; sort: OrderSort; onSort: (next: OrderSort) => void }) {
  const { next, ariaSort } = sortFor(label, sort);
  return (
    <button
      type="button"
      onClick={() => onSort(next)}
      data-testid={`sort-${label.toLowerCase()}`}
      className="inline-flex items-center gap-1 rounded uppercase tracking-wide hover:text-slate-900"
    >
      {label}
      <span aria-hidden="true" className={ariaSort === 'none' ? 'text-slate-300' : 'text-slate-700'}>
        {ariaSort === 'ascending' ? '▲' : ariaSort === 'descending' ? '▼' : '↕'}
      </span>
      <span className="sr-only">, sort by {SORT_CAPTION[next]}</span>
    </button>
  );
}

export function CustomerFilter({ value, className, onChange }: { value: string; className: string; onChange: (v: string) => void }) {
  const [text, setText] = useState(value);
  const debounced = useDebounced(text.trim(), 300);
  useEffect(() => setText(value), [value]);
  useEffect(() => {
    if (debounced !== value) onChange(debounced);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [debounced]);
  return (
    <div className="min-w-0 flex-[1_1_12rem]">
      <label htmlFor="orders-customer" className="mb-1 block text-xs font-medium text-slate-600">
        Customer
      </label>
      <input
        id="orders-customer"
        type="search"
        value={text}
        maxLength={100}
        onChange={(e) => setText(e.target.value)}
        placeholder="Email"
        className={`${className} w-full`}
      />
    </div>
  );
}

export function CreatedRangeFilter({
  from,
  to,
  className,
  onChange,
}: {
  from: string;
  to: string;
  className: string;
  onChange: (from: string, to: string) => void;
}) {
  return (
    <fieldset className="flex items-end gap-2">
      <legend className="sr-only">Created between (UTC days, both included)</legend>
      <div>
        <label htmlFor="orders-from" className="mb-1 block text-xs font-medium text-slate-600">
          Created from
        </label>
        <input id="orders-from" type="date" value={from} max={to || undefined} onChange={(e) => onChange(e.target.value, to)} className={className} />
      </div>
      <div>
        <label htmlFor="orders-to" className="mb-1 block text-xs font-medium text-slate-600">
          to
        </label>
        <input id="orders-to" type="date" value={to} min={from || undefined} onChange={(e) => onChange(from, e.target.value)} className={className} />
      </div>
    </fieldset>
  );
}

/** Below lg the column headers are hidden (rows are cards): the same sorts as a select. */
export function SortSelect({ sort, className, onChange }: { sort: OrderSort; className: string; onChange: (s: OrderSort) => void }) {
  return (
    <div className="lg:hidden">
      <label htmlFor="orders-sort" className="mb-1 block text-xs font-medium text-slate-600">
        Sort
      </label>
      <select id="orders-sort" value={sort} onChange={(e) => onChange(e.target.value as OrderSort)} className={`${className} pr-8`}>
        {(Object.keys(SORT_CAPTION) as OrderSort[]).map((s) => (
          <option key={s} value={s}>
            {SORT_CAPTION[s].replace(/^./, (c) => c.toUpperCase())}
          </option>
        ))}
      </select>
    </div>
  );
}
