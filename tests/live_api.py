"""HTTP helpers for tests against live servers (tests/live.py): sign up, make admins,
create and move orders, read the test-only runtime counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from starlette.applications import Starlette

from infra.metrics import Metrics
from infra.settings import Settings
from resolvers import accounts
from resolvers.context import RequestContext
from server.app import build_services
from tests.client import PASSWORD, GraphQLClient


class LiveClient(GraphQLClient):
    """`tests.client.GraphQLClient` over a real socket; admins are made in the database."""

    def __init__(self, http: httpx.AsyncClient, database_url: str) -> None:
        super().__init__(http, cast(Starlette, None))
        self.database_url = database_url

    async def make_admin(self, email: str, password: str = PASSWORD) -> str:
        settings = Settings(database_url=self.database_url, app_env="test", bcrypt_rounds=4)
        services = build_services(settings, Metrics())
        try:
            ctx = RequestContext(services=services, request_id="test")
            await accounts.promote_or_create_admin(ctx, email, password)
        finally:
            await services.db.dispose()
        return str((await self.login(email, password)).ok()["login"]["accessToken"])

    async def new_user(self) -> str:
        return await self.signup(f"user-{uuid.uuid4().hex[:10]}@example.com")

    async def new_admin(self) -> str:
        return await self.make_admin(f"admin-{uuid.uuid4().hex[:10]}@example.com")

    async def new_order(self, token: str) -> dict[str, Any]:
        result = await self.create_order(token, uuid.uuid4().hex)
        order: dict[str, Any] = result.ok()["createOrder"]
        return order

    async def runtime(self) -> dict[str, int]:
        """Task, subscriber and websocket counts (the server runs with APP_ENV=test)."""
        response = await self.http.get("/debug/runtime")
        response.raise_for_status()
        counts: dict[str, int] = response.json()
        return counts

    async def gauge(self, name: str) -> float:
        text = (await self.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no gauge {name} in /metrics")

    async def subscribed(self, subscribers: int) -> None:
        """Wait until the server has registered exactly this many subscriptions."""
        counts = await self.settled_runtime({"subscribers": subscribers}, timeout=5)
        assert counts["subscribers"] == subscribers, counts

    async def settled_runtime(
        self, expected: dict[str, int], timeout: float = 10.0
    ) -> dict[str, int]:
        """The runtime counts once they equal `expected`, or as they are at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            counts = await self.runtime()
            if all(counts.get(k) == v for k, v in expected.items()) or loop.time() > deadline:
                return counts
            await asyncio.sleep(0.1)


@asynccontextmanager
async def live_client(url: str, database_url: str) -> AsyncIterator[LiveClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield LiveClient(http, database_url)
