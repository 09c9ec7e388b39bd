import { gql, type TypedDocumentNode } from '@apollo/client';
import type { DateTime, Order, OrderStatus, PaymentStatus } from './types';

// The back office's documents (issue 17) and their hand-written shapes. `npm run check:ops`
// validates them against ../schema.graphql like those in operations.ts.

export type OrderSort = 'NEWEST' | 'OLDEST' | 'RECENTLY_UPDATED' | 'AMOUNT_HIGH' | 'AMOUNT_LOW';
export const ORDER_SORTS: readonly OrderSort[] = ['NEWEST', 'OLDEST', 'RECENTLY_UPDATED', 'AMOUNT_HIGH', 'AMOUNT_LOW'];

export interface RefundablePayment {
  __typename?: 'Payment';
  id: string;
  orderId: string;
  status: PaymentStatus;
  amountCents: number;
  needsRefund: boolean;
}

export interface OrderDayStats {
  __typename?: 'OrderDayStats';
  day: string;
  status: OrderStatus;
  orders: number;
  amountCents: number;
}

export interface DeadLetter {
  __typename?: 'DeadLetter';
  id: string;
  orderId: string;
  paymentId: string;
  attempts: number;
  lastError: string;
  createdAt: DateTime;
  retriedAt: DateTime | null;
}

export interface Product {
  __typename?: 'Product';
  sku: string;
  name: string;
  priceCents: number;
}

const ORDER_DETAIL_FIELDS = gql`
  fragment AdminOrderDetailFields on Order {
    id
    status
    version
    clientToken
    amountCents
    createdAt
    updatedAt
    items {
      sku
      qty
      unitPriceCents
      lineTotalCents
    }
    user {
      id
      email
    }
  }
`;

const PAYMENT_FIELDS = gql`
  fragment RefundablePaymentFields on Payment {
    id
    orderId
    status
    amountCents
    needsRefund
  }
`;

export const ORDER_STATS: TypedDocumentNode<{ orderStats: OrderDayStats[] }, { from: DateTime; to: DateTime }> = gql`
  query AdminOrderStats($from: DateTime!, $to: DateTime!) {
    orderStats(from: $from, to: $to) {
      day
      status
      orders
      amountCents
    }
  }
`;

type Total = { total: number };
export interface StatusCountsData {
  pending: Total;
  paid: Total;
  shipped: Total;
  delivered: Total;
  cancelled: Total;
  deadLetters: Total;
}

/** All-time counts by status and the dead letters' count: one request of six totals. */
export const STATUS_COUNTS: TypedDocumentNode<StatusCountsData, Record<string, never>> = gql`
  query AdminStatusCounts {
    pending: orders(status: PENDING, limit: 1) {
      total
    }
    paid: orders(status: PAID, limit: 1) {
      total
    }
    shipped: orders(status: SHIPPED, limit: 1) {
      total
    }
    delivered: orders(status: DELIVERED, limit: 1) {
      total
    }
    cancelled: orders(status: CANCELLED, limit: 1) {
      total
    }
    deadLetters: paymentDeadLetters(limit: 1) {
      total
    }
  }
`;

export interface CancelledOrder {
  __typename?: 'Order';
  id: string;
  status: OrderStatus;
  amountCents: number;
  updatedAt: DateTime;
  user: { __typename?: 'User'; id: string; email: string };
  payment: RefundablePayment | null;
}

/** No API lists the payments that need a refund: they are found on CANCELLED orders. */
export const CANCELLED_ORDERS: TypedDocumentNode<
  { orders: { items: CancelledOrder[]; total: number; page: number; pages: number } },
  { page: number }
> = gql`
  query AdminCancelledOrders($page: Int!) {
    orders(status: CANCELLED, page: $page, limit: 100, sort: RECENTLY_UPDATED) {
      items {
        id
        status
        amountCents
        updatedAt
        user {
          id
          email
        }
        payment {
          ...RefundablePaymentFields
        }
      }
      total
      page
      pages
    }
  }
  ${PAYMENT_FIELDS}
`;

export const ORDER_DETAIL: TypedDocumentNode<
  { order: (Omit<Order, 'payment'> & { payment: RefundablePayment | null }) | null },
  { id: string }
> = gql`
  query AdminOrderDetail($id: ID!) {
    order(id: $id) {
      ...AdminOrderDetailFields
      payment {
        ...RefundablePaymentFields
      }
    }
  }
  ${ORDER_DETAIL_FIELDS}
  ${PAYMENT_FIELDS}
`;

export const REFUND_PAYMENT: TypedDocumentNode<{ refundPayment: RefundablePayment }, { input: { paymentId: string } }> = gql`
  mutation AdminRefundPayment($input: RefundPaymentInput!) {
    refundPayment(input: $input) {
      ...RefundablePaymentFields
    }
  }
  ${PAYMENT_FIELDS}
`;

export const DEAD_LETTERS: TypedDocumentNode<
  { paymentDeadLetters: { items: DeadLetter[]; total: number; page: number; limit: number; pages: number } },
  { page: number; limit: number }
> = gql`
  query AdminDeadLetters($page: Int!, $limit: Int!) {
    paymentDeadLetters(page: $page, limit: $limit) {
      items {
        id
        orderId
        paymentId
        attempts
        lastError
        createdAt
        retriedAt
      }
      total
      page
      limit
      pages
    }
  }
`;

export const RETRY_DEAD_LETTER: TypedDocumentNode<{ retryDeadLetter: RefundablePayment }, { input: { id: string } }> = gql`
  mutation AdminRetryDeadLetter($input: RetryDeadLetterInput!) {
    retryDeadLetter(input: $input) {
      ...RefundablePaymentFields
    }
  }
  ${PAYMENT_FIELDS}
`;

export const PRODUCTS: TypedDocumentNode<{ products: Product[] }, Record<string, never>> = gql`
  query AdminProducts {
    products {
      sku
      name
      priceCents
    }
  }
`;

export const UPSERT_PRODUCT: TypedDocumentNode<{ upsertProduct: Product }, { input: Product }> = gql`
  mutation AdminUpsertProduct($input: ProductInput!) {
    upsertProduct(input: $input) {
      sku
      name
      priceCents
    }
  }
`;
