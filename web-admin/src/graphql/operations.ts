import { gql, type TypedDocumentNode } from '@apollo/client';
import type {
  LoginData,
  LoginVars,
  MeData,
  OrderData,
  OrderEventsData,
  OrderEventsVars,
  OrderHistoryData,
  OrderHistoryVars,
  OrderStatusChangedData,
  OrderStatusChangedVars,
  OrderVars,
  OrdersData,
  OrdersVars,
  UpdateOrderStatusData,
  UpdateOrderStatusVars,
} from './types';

// Every document here is checked against the server's SDL by `npm run check:ops`
// (scripts/check-ops.mjs), which resolves the ${FRAGMENT} interpolations below.

export const ORDER_FIELDS = gql`
  fragment OrderFields on Order {
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
    payment {
      id
      status
      amountCents
    }
  }
`;

export const LOGIN: TypedDocumentNode<LoginData, LoginVars> = gql`
  mutation AdminLogin($input: LoginInput!) {
    login(input: $input) {
      accessToken
      role
      user {
        id
        email
      }
    }
  }
`;

export const ME: TypedDocumentNode<MeData, Record<string, never>> = gql`
  query AdminMe {
    me {
      id
      email
      role
    }
  }
`;

export const ORDERS: TypedDocumentNode<OrdersData, OrdersVars> = gql`
  query AdminOrders(
    $status: OrderStatus
    $q: String
    $page: Int!
    $limit: Int!
    $sort: OrderSort
    $createdFrom: DateTime
    $createdTo: DateTime
    $after: String
  ) {
    orders(
      status: $status
      q: $q
      page: $page
      limit: $limit
      sort: $sort
      createdFrom: $createdFrom
      createdTo: $createdTo
      after: $after
    ) {
      items {
        ...OrderFields
      }
      total
      page
      limit
      pages
      nextCursor
      totalIsExact
    }
  }
  ${ORDER_FIELDS}
`;

export const ORDER: TypedDocumentNode<OrderData, OrderVars> = gql`
  query AdminOrder($id: ID!) {
    order(id: $id) {
      ...OrderFields
    }
  }
  ${ORDER_FIELDS}
`;

export const UPDATE_ORDER_STATUS: TypedDocumentNode<UpdateOrderStatusData, UpdateOrderStatusVars> = gql`
  mutation AdminUpdateOrderStatus($input: UpdateOrderStatusInput!) {
    updateOrderStatus(input: $input) {
      ...OrderFields
    }
  }
  ${ORDER_FIELDS}
`;

export const ORDER_STATUS_CHANGED: TypedDocumentNode<OrderStatusChangedData, OrderStatusChangedVars> = gql`
  subscription AdminOrderStatusChanged($orderId: ID) {
    orderStatusChanged(orderId: $orderId) {
      orderId
      status
      previousStatus
      version
      changedAt
    }
  }
`;

export const ORDER_EVENT_FIELDS = gql`
  fragment OrderEventFields on OrderEvent {
    cursor
    orderId
    kind
    status
    previousStatus
    version
    at
    source
    actor {
      id
      email
    }
  }
`;

/** Every event of every order, resumed after the last cursor seen when the socket comes back. */
export const ORDER_EVENTS: TypedDocumentNode<OrderEventsData, OrderEventsVars> = gql`
  subscription AdminOrderEvents($orderId: ID, $after: String) {
    orderEvents(orderId: $orderId, after: $after) {
      ...OrderEventFields
    }
  }
  ${ORDER_EVENT_FIELDS}
`;

export const ORDER_HISTORY: TypedDocumentNode<OrderHistoryData, OrderHistoryVars> = gql`
  query AdminOrderHistory($id: ID!) {
    order(id: $id) {
      id
      history {
        ...OrderEventFields
      }
    }
  }
  ${ORDER_EVENT_FIELDS}
`;

/** Used with cache.writeFragment when a live event arrives. */
export const ORDER_LIVE_FIELDS = gql`
  fragment OrderLiveFields on Order {
    id
    status
    version
    updatedAt
  }
`;
