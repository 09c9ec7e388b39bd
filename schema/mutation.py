"""Mutation root: check the input's shape, call one use case, convert the result."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from models import state
from resolvers import accounts, backoffice, catalog, orders, payments, refunds
from resolvers.context import RequestContext
from schema.inputs import (
    CreateOrderInput,
    InitiatePaymentInput,
    LoginInput,
    ProductInput,
    RefundPaymentInput,
    RetryDeadLetterInput,
    SignupInput,
    UpdateOrderStatusInput,
)
from schema.selection import order_include
from schema.types import AuthPayload, Order, Payment, Product, User

Ctx = Info[RequestContext, None]


def _auth_payload(result: accounts.AuthResult) -> AuthPayload:
    return AuthPayload(
        access_token=result.access_token,
        token_type="Bearer",  # noqa: S106 - the scheme, not a secret
        role=state.Role(result.user.role),
        user=User.of(result.user),
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create an account (role USER) and sign in.")
    async def signup(self, info: Ctx, input: SignupInput) -> AuthPayload:
        return _auth_payload(await accounts.signup(info.context, input.email, input.password))

    @strawberry.mutation(description="Sign in with email and password.")
    async def login(self, info: Ctx, input: LoginInput) -> AuthPayload:
        return _auth_payload(await accounts.login(info.context, input.email, input.password))

    @strawberry.mutation(
        description="Create an order; a repeat with the same clientToken and items returns "
        "the original order."
    )
    async def create_order(self, info: Ctx, input: CreateOrderInput) -> Order:
        items = [orders.ItemInput(sku=i.sku, qty=i.qty) for i in input.items]
        view = await orders.create_order(
            info.context, items, input.client_token, order_include(info)
        )
        return Order.of(view)

    @strawberry.mutation(description="Move an order to a new status (ADMIN only).")
    async def update_order_status(self, info: Ctx, input: UpdateOrderStatusInput) -> Order:
        view = await orders.update_order_status(
            info.context,
            input.id,
            state.OrderStatus(input.status),
            input.version,
            order_include(info),
        )
        return Order.of(view)

    @strawberry.mutation(description="Start paying for a PENDING order (owner or admin).")
    async def initiate_payment(self, info: Ctx, input: InitiatePaymentInput) -> Payment:
        return Payment.of(await payments.initiate_payment(info.context, input.order_id))

    @strawberry.mutation(description="Create or change a product (ADMIN only).")
    async def upsert_product(self, info: Ctx, input: ProductInput) -> Product:
        product = await catalog.upsert_product(
            info.context, input.sku, input.name, input.price_cents
        )
        return Product.of(product)

    @strawberry.mutation(
        description="Ask the provider again for a dead letter's payment (the order must "
        "still be PENDING) or refund; stamps its retriedAt (ADMIN only)."
    )
    async def retry_dead_letter(self, info: Ctx, input: RetryDeadLetterInput) -> Payment:
        return Payment.of(await backoffice.retry_dead_letter(info.context, input.id))

    @strawberry.mutation(
        description="Refund a SUCCEEDED payment that needs a refund; a REFUNDED one is "
        "returned as it is (ADMIN only)."
    )
    async def refund_payment(self, info: Ctx, input: RefundPaymentInput) -> Payment:
        return Payment.of(await refunds.refund_payment(info.context, input.payment_id))
