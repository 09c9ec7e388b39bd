// Hand-written TypeScript shapes of the GraphQL schema, for the fields this app selects.
// `npm run check:ops` validates every operation document against the server's SDL.

export const ORDER_STATUSES = ['PENDING', 'PAID', 'SHIPPED', 'DELIVERED', 'CANCELLED'] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];
export type PaymentStatus = 'PENDING' | 'SUCCEEDED' | 'FAILED' | 'REFUNDED';
export type Role = 'ADMIN' | 'USER';
/** ISO-8601 timestamp, as the DateTime scalar is serialised. */
export type DateTime = string;

export interface OrderItem {
  __typename?: 'OrderItem';
  sku: string;
  qty: number;
  unitPriceCents: number;
  lineTotalCents: number;
}

export interface OrderUser {
  __typename?: 'User';
  id: string;
  email: string;
}

export interface OrderPayment {
  __typename?: 'Payment';
  id: string;
  status: PaymentStatus;
  amountCents: number;
}

export interface Order {
  __typename?: 'Order';
  id: string;
  status: OrderStatus;
  version: number;
  clientToken: string;
  amountCents: number;
  createdAt: DateTime;
  updatedAt: DateTime;
  items: OrderItem[];
  user: OrderUser;
  payment: OrderPayment | null;
}

export interface OrderPage {
  __typename?: 'OrderPage';
  items: Order[];
  total: number;
  page: number;
  limit: number;
  pages: number;
  nextCursor: string | null;
  totalIsExact: boolean;
}

export interface OrderStatusEvent {
  __typename?: 'OrderStatusEvent';
  orderId: string;
  status: OrderStatus;
  previousStatus: OrderStatus;
  version: number;
  changedAt: DateTime;
}

export type OrderEventKind =
  | 'CREATED'
  | 'STATUS_CHANGED'
  | 'PAYMENT_INITIATED'
  | 'PAYMENT_SUCCEEDED'
  | 'PAYMENT_FAILED'
  | 'REFUND_NEEDED'
  | 'REFUNDED';
export type EventSource = 'USER' | 'ADMIN' | 'PAYMENT_PROVIDER' | 'SYSTEM';

export interface OrderEvent {
  __typename?: 'OrderEvent';
  /** Opaque; later events have later cursors. */
  cursor: string;
  orderId: string;
  kind: OrderEventKind;
  status: OrderStatus;
  previousStatus: OrderStatus | null;
  version: number;
  at: DateTime;
  source: EventSource;
  actor: OrderUser | null;
}

// ---- operation results and variables ----

export interface LoginData {
  login: { __typename?: 'AuthPayload'; accessToken: string; role: Role; user: { __typename?: 'User'; id: string; email: string } };
}
export interface LoginVars {
  input: { email: string; password: string };
}

export interface OrdersData {
  orders: OrderPage;
}
export interface OrdersVars {
  status?: OrderStatus | null;
  q?: string | null;
  page: number;
  limit: number;
  sort?: 'NEWEST' | 'OLDEST' | 'RECENTLY_UPDATED' | 'AMOUNT_HIGH' | 'AMOUNT_LOW' | null;
  createdFrom?: DateTime | null;
  createdTo?: DateTime | null;
  after?: string | null;
}

export interface OrderData {
  order: Order | null;
}
export interface OrderVars {
  id: string;
}

export interface UpdateOrderStatusData {
  updateOrderStatus: Order;
}
export interface UpdateOrderStatusVars {
  input: { id: string; status: OrderStatus; version: number };
}

export interface OrderStatusChangedData {
  orderStatusChanged: OrderStatusEvent;
}
export interface OrderStatusChangedVars {
  orderId: string | null;
}

export interface MeData {
  me: { __typename?: 'User'; id: string; email: string; role: Role };
}

export interface OrderEventsData {
  orderEvents: OrderEvent;
}
export interface OrderEventsVars {
  orderId: string | null;
  after: string | null;
}

export interface OrderHistoryData {
  order: { __typename?: 'Order'; id: string; history: OrderEvent[] } | null;
}
export interface OrderHistoryVars {
  id: string;
}
