import { memo } from 'react';
import type { Order, OrderStatus } from '../graphql/types';
import { formatDateTime, formatMoney, summarizeItems } from '../lib/format';
import { StatusBadge } from './StatusBadge';
import { StatusMenu } from './StatusMenu';
import { Link } from './ui';

interface Props {
  order: Order;
  flash: number | undefined;
  busy: boolean;
  onOpen: (id: string, trigger: HTMLElement) => void;
  onChangeStatus: (order: Order, next: OrderStatus) => void;
}

// One DOM for both layouts: a flex-wrapped "card" below lg, a table row from lg up.
const TD = 'lg:table-cell lg:px-4 lg:py-3 lg:align-middle';

export const OrderRow = memo(function OrderRow({ order, flash, busy, onOpen, onChangeStatus }: Props) {
  const items = summarizeItems(order.items);
  return (
    <tr
      data-testid={`order-row-${order.id}`}
      data-status={order.status}
      data-version={order.version}
      // Alternate between two identical keyframes so a second event restarts the fade.
      style={flash !== undefined ? { animation: `${flash % 2 ? 'flash-a' : 'flash-b'} 2s ease-out` } : undefined}
      className="flex flex-wrap items-center gap-x-3 gap-y-1.5 px-4 py-4 lg:table-row lg:p-0 hover:bg-slate-50/70"
    >
      <td className={`${TD} order-1 grow basis-1/3`}>
        {/* The order's own page (a real URL); "Details" opens the drawer. */}
        <Link
          to={`/orders/${order.id}`}
          className="rounded font-mono text-sm font-semibold text-indigo-700 hover:text-indigo-500 hover:underline focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600"
          aria-label={`Order #${order.id} page`}
        >
          #{order.id}
        </Link>
      </td>
      <td className={`${TD} order-3 min-w-0 basis-full text-sm text-slate-900`}>
        <span className="block truncate lg:max-w-56" title={order.user.email}>
          {order.user.email}
        </span>
      </td>
      <td className={`${TD} order-4 basis-full text-sm text-slate-600`}>
        <span className="line-clamp-2 lg:max-w-72" title={items} data-testid="order-items">
          {order.items.map((item, i) => (
            <span key={item.sku}>
              <span className="whitespace-nowrap">
                {item.qty}× {item.sku}
              </span>
              {i < order.items.length - 1 ? ', ' : ''}
            </span>
          ))}
        </span>
      </td>
      <td className={`${TD} order-7 grow basis-2/5 text-base font-semibold tabular-nums text-slate-900 lg:text-right lg:text-sm lg:font-medium`}>
        {formatMoney(order.amountCents)}
      </td>
      <td className={`${TD} order-2`}>
        <StatusBadge status={order.status} />
      </td>
      <td className={`${TD} order-6 text-xs tabular-nums text-slate-500 lg:text-center lg:text-sm`}>
        <span className="lg:hidden">Version </span>
        <span data-testid="order-version">{order.version}</span>
      </td>
      <td className={`${TD} order-5 min-w-0 grow basis-3/5 truncate whitespace-nowrap text-xs text-slate-500 lg:text-sm`}>
        <span className="lg:hidden">Updated </span>
        <time dateTime={order.updatedAt}>{formatDateTime(order.updatedAt)}</time>
      </td>
      <td className={`${TD} order-8 pt-1 lg:pt-3`}>
        <div className="flex items-center justify-end gap-2">
          <StatusMenu orderId={order.id} status={order.status} busy={busy} onSelect={(next) => onChangeStatus(order, next)} />
          <button
            type="button"
            onClick={(e) => onOpen(order.id, e.currentTarget)}
            aria-label={`Details of order #${order.id}`}
            className="inline-flex h-8 items-center rounded-md px-2.5 text-xs font-medium text-slate-600 hover:bg-slate-100 hover:text-slate-900 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600"
          >
            Details
          </button>
        </div>
      </td>
    </tr>
  );
});
