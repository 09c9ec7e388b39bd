import type { OrderStatus, PaymentStatus } from '../graphql/types';
import { PAYMENT_BADGE, STATUS_BADGE, STATUS_DOT, STATUS_LABEL } from '../lib/status';

const BASE = 'inline-flex items-center gap-1.5 whitespace-nowrap rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset';

export function StatusBadge({ status }: { status: OrderStatus }) {
  return (
    <span className={`${BASE} ${STATUS_BADGE[status]}`} data-testid="status-badge" data-status={status}>
      <span aria-hidden="true" className={`size-1.5 rounded-full ${STATUS_DOT[status]}`} />
      {STATUS_LABEL[status]}
    </span>
  );
}

export function PaymentBadge({ status }: { status: PaymentStatus }) {
  return <span className={`${BASE} ${PAYMENT_BADGE[status]}`}>{status.charAt(0) + status.slice(1).toLowerCase()}</span>;
}
