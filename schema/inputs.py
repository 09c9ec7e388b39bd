"""GraphQL input types."""

from __future__ import annotations

import strawberry

from schema.types import OrderStatus


@strawberry.input
class SignupInput:
    email: str
    password: str


@strawberry.input
class LoginInput:
    email: str
    password: str


@strawberry.input
class OrderItemInput:
    sku: str
    qty: int


@strawberry.input
class CreateOrderInput:
    items: list[OrderItemInput]
    client_token: str


@strawberry.input
class UpdateOrderStatusInput:
    id: strawberry.ID
    status: OrderStatus
    version: int


@strawberry.input
class InitiatePaymentInput:
    order_id: strawberry.ID


@strawberry.input
class ProductInput:
    sku: str
    name: str
    price_cents: int


@strawberry.input
class RetryDeadLetterInput:
    id: strawberry.ID


@strawberry.input
class RefundPaymentInput:
    payment_id: strawberry.ID
