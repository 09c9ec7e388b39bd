"""Shared pieces of the resilience scenarios: throwaway databases, servers under test,
a counting GraphQL client, and direct SQL for checking what was really committed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from models.db import null_pool_engine
from tests.live import LiveServer, live_server
from tests.resilience.ledger import Scenario

T = TypeVar("T")

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("TEST_REDIS_URL") or ""
SECRET_KEY = "resilience-secret-key-0123456789abcdef"
WEBHOOK_SECRET = "resilience-webhook-secret-0123456789abcdef"
PASSWORD = "correct-horse-battery"

# Every error code a client may see (API-CONTRACT.md, README.md).
CONTRACT_CODES = frozenset(
    {
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "BAD_USER_INPUT",
        "NOT_FOUND",
        "EMAIL_TAKEN",
        "INVALID_CREDENTIALS",
        "VERSION_CONFLICT",
        "INVALID_TRANSITION",
        "IDEMPOTENCY_KEY_REUSED",
        "RATE_LIMITED",
        "PAYMENT_PROVIDER_UNAVAILABLE",
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
    }
)
# What must never reach a client, in a message or an extension.
LEAK_MARKERS = ("Traceback", "asyncpg", "sqlalchemy", "SELECT ", "INSERT ", 'File "', "psycopg")

ORDER_FIELDS = "id status version clientToken amountCents items { sku qty } user { id email }"
CREATE_ORDER = (
    "mutation($input: CreateOrderInput!) { createOrder(input: $input) { id status version "
    "clientToken } }"
)
MOVE = (
    "mutation($input: UpdateOrderStatusInput!) { updateOrderStatus(input: $input) "
    "{ id status version } }"
)
PAY = "mutation($id: ID!) { initiatePayment(input: {orderId: $id}) { id status orderId } }"
ORDER = f"query($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} payment {{ id status }} }} }}"
ORDERS = "query($q: String) { orders(q: $q, limit: 20) { total items { id status version } } }"


# --- databases -------------------------------------------------------------------------


def run_sync(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync or async code (in a thread of its own)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result(timeout=120)


async def sql(url: str, statement: str, **params: Any) -> list[Any]:
    """Rows of one statement, on a connection of its own (no pool to outlive a restart)."""
    engine = null_pool_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.fetchall()) if result.returns_rows else []
    finally:
        await engine.dispose()


def sql_sync(url: str, statement: str, **params: Any) -> list[Any]:
    return run_sync(lambda: sql(url, statement, **params))


async def _admin_exec(base_url: str, statement: str) -> None:
    admin_url = make_url(base_url).set(database="postgres").render_as_string(False)
    engine = null_pool_engine(admin_url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def pg_database(base_url: str = PG_URL, *, keep: bool = False) -> Iterator[str]:
    """A new, empty PostgreSQL database (the server under test migrates it), dropped after."""
    name = f"resilience_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    run_sync(lambda: _admin_exec(base_url, f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        if not keep:
            with contextlib.suppress(Exception):
                run_sync(
                    lambda: _admin_exec(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )


# --- servers under test ----------------------------------------------------------------


def server_env(
    database_url: str, *, redis_url: str | None = REDIS_URL or None, **extra: str | int
) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "APP_ENV": "test",
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
        "CACHE_TTL_SECONDS": "30",
        "PAYMENT_RETRY_BASE_SECONDS": "0.01",
        # A prefix per server: runs that share one Redis never see each other's keys.
        "REDIS_KEY_PREFIX": f"resilience-{uuid.uuid4().hex[:10]}:",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


@contextlib.contextmanager
def serve(env: dict[str, str], tmp_dir: Path, *, port: int | None = None) -> Iterator[LiveServer]:
    with live_server(env, tmp_dir, port=port) as server:
        yield server


def log_mark(server: LiveServer) -> int:
    return len(server.log())


def unexpected_errors(server: LiveServer, since: int = 0) -> list[str]:
    """Log lines (after offset `since`) of errors the server did not expect: masked
    INTERNAL_SERVER_ERRORs, failed webhooks, exceptions that reached uvicorn."""
    markers = ("unexpected error", "webhook failed", "Exception in ASGI application")
    return [line for line in server.log()[since:].splitlines() if any(m in line for m in markers)]


def healthy(url: str, timeout: float = 5.0) -> bool:
    try:
        with httpx.Client(timeout=timeout) as http:
            if http.get(f"{url}/health").status_code != 200:
                return False
            r = http.post(f"{url}/graphql", json={"query": "{ products { sku } }"})
            return r.status_code == 200 and bool(r.json().get("data", {}).get("products"))
    except (httpx.HTTPError, ValueError):
        return False


# --- a counting GraphQL client ---------------------------------------------------------


class GQL:
    """One answer: HTTP status and the decoded body (or None when it is not JSON)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    @property
    def data(self) -> Any:
        return self.body.get("data") if isinstance(self.body, dict) else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return (self.body.get("errors") or []) if isinstance(self.body, dict) else []

    @property
    def codes(self) -> list[str | None]:
        return [(e.get("extensions") or {}).get("code") for e in self.errors]

    @property
    def code(self) -> str | None:
        return self.codes[0] if self.codes else None

    def ok(self) -> Any:
        assert self.status == 200 and not self.errors, f"{self.status} {self.body}"
        return self.data


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class Api:
    """A GraphQL client of one live server that counts what it sends in a scenario."""

    def __init__(self, http: httpx.AsyncClient, url: str, scenario: Scenario | None) -> None:
        self.http = http
        self.url = url
        self.scenario = scenario

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, scenario: Scenario | None, *, timeout: float = 10.0, connections: int = 100
    ) -> AsyncIterator[Api]:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
            yield cls(http, url, scenario)

    def count(self, kind: str = "http") -> None:
        if self.scenario is not None:
            self.scenario.sent(kind)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        self.count()
        return await self.http.post(path, **kwargs)

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
    ) -> GQL:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout else {}
        response = await self.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            **kwargs,
        )
        return GQL(response.status_code, _decode(response))

    async def signup(self, email: str, password: str = PASSWORD) -> tuple[str, int]:
        r = await self.gql(
            "mutation($i: SignupInput!) { signup(input: $i) { accessToken user { id } } }",
            {"i": {"email": email, "password": password}},
        )
        payload = r.ok()["signup"]
        return payload["accessToken"], int(payload["user"]["id"])

    async def login(self, email: str, password: str = PASSWORD) -> str:
        r = await self.gql(
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            {"i": {"email": email, "password": password}},
        )
        return str(r.ok()["login"]["accessToken"])

    async def admin(self, database_url: str, email: str) -> tuple[str, int]:
        """A new admin: signed up, promoted in the database, signed in again."""
        _, user_id = await self.signup(email)
        await sql(database_url, "UPDATE users SET role = 'ADMIN' WHERE id = :id", id=user_id)
        return await self.login(email), user_id

    async def create_order(
        self, token: str, client_token: str, items: list[tuple[str, int]] | None = None
    ) -> GQL:
        lines = [{"sku": s, "qty": q} for s, q in (items or [("WIDGET-001", 1)])]
        return await self.gql(
            CREATE_ORDER, {"input": {"items": lines, "clientToken": client_token}}, token
        )

    async def move(self, token: str, order_id: str, status: str, version: int) -> GQL:
        return await self.gql(
            MOVE, {"input": {"id": order_id, "status": status, "version": version}}, token
        )


def leaks(body: Any) -> list[str]:
    """Markers of internals (tracebacks, SQL, driver names) found in an answer."""
    blob = str(body)
    return [m for m in LEAK_MARKERS if m in blob]


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    @property
    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def __bool__(self) -> bool:
        return time.monotonic() < self.at
