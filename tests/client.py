"""A GraphQL client for tests: speaks HTTP to the app like any other client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from resolvers import accounts
from resolvers.context import RequestContext

PASSWORD = "correct-horse-battery"

ORDER_FIELDS = """
  id status version clientToken amountCents createdAt updatedAt
  items { sku qty unitPriceCents lineTotalCents }
  user { id email role }
  payment { id status amountCents redirectUrl orderId }
"""

CREATE_ORDER = f"""
mutation Create($input: CreateOrderInput!) {{ createOrder(input: $input) {{ {ORDER_FIELDS} }} }}
"""
UPDATE_STATUS = f"""
mutation Move($input: UpdateOrderStatusInput!) {{
  updateOrderStatus(input: $input) {{ {ORDER_FIELDS} }}
}}
"""


class GraphQLErrorResponse(AssertionError):
    pass


@dataclass
class Result:
    status_code: int
    body: dict[str, Any]

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.body.get("errors") or []

    @property
    def code(self) -> str | None:
        return self.errors[0]["extensions"].get("code") if self.errors else None

    @property
    def ext(self) -> dict[str, Any]:
        return self.errors[0]["extensions"] if self.errors else {}

    def ok(self) -> Any:
        if self.errors:
            raise GraphQLErrorResponse(f"unexpected errors: {self.errors}")
        return self.data


class GraphQLClient:
    def __init__(self, http: httpx.AsyncClient, app: Starlette) -> None:
        self.http = http
        self.app = app

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Result:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=hdrs
        )
        return Result(response.status_code, response.json())

    async def signup(self, email: str, password: str = PASSWORD) -> str:
        result = await self.execute(
            "mutation($i: SignupInput!) { signup(input: $i) { accessToken } }",
            {"i": {"email": email, "password": password}},
        )
        return str(result.ok()["signup"]["accessToken"])

    async def login(self, email: str, password: str = PASSWORD) -> Result:
        return await self.execute(
            "mutation($i: LoginInput!) { login(input: $i) { accessToken tokenType role "
            "user { id email role } } }",
            {"i": {"email": email, "password": password}},
        )

    async def make_admin(self, email: str, password: str = PASSWORD) -> str:
        ctx = RequestContext(services=self.app.state.services, request_id="test")
        await accounts.promote_or_create_admin(ctx, email, password)
        return str((await self.login(email, password)).ok()["login"]["accessToken"])

    async def create_order(
        self,
        token: str,
        client_token: str,
        items: list[tuple[str, int]] | None = None,
    ) -> Result:
        lines = [{"sku": s, "qty": q} for s, q in (items or [("WIDGET-001", 1)])]
        return await self.execute(
            CREATE_ORDER, {"input": {"items": lines, "clientToken": client_token}}, token
        )

    async def move(self, token: str, order_id: str, status: str, version: int) -> Result:
        return await self.execute(
            UPDATE_STATUS,
            {"input": {"id": order_id, "status": status, "version": version}},
            token,
        )
