"""Fixtures: one database per test run, emptied between tests; apps built per test.

The backend comes from the environment: TEST_DATABASE_URL (default: a SQLite file) and
TEST_REDIS_URL (default: none, the in-process broker, limiter and cache). When one is set
and cannot be reached the run fails: it never silently skips. TEST_FAST_PATHS=off runs the
suite on the libraries' public paths only (FAST_PATHS=off, for every app and server the
tests start); tests of a fast path itself are marked `fast_paths` and skipped then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from infra.settings import Settings
from models.db import null_pool_engine
from models.migrate import upgrade_to_head
from server.app import create_app
from tests.client import GraphQLClient

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("TEST_REDIS_URL") or None
USE_PG = PG_URL.startswith("postgresql")
FAST_PATHS = os.environ.get("TEST_FAST_PATHS", "on").strip().lower()
if FAST_PATHS not in ("on", "off"):
    raise pytest.UsageError(f"TEST_FAST_PATHS must be on or off, not {FAST_PATHS!r}")
# Settings read it from the environment: apps built here, `load_settings()` and the
# servers tests start in processes of their own alike.
os.environ["FAST_PATHS"] = FAST_PATHS

_TABLES = (
    "outbox, webhook_inbox, payment_dead_letters, payments, order_lines, orders, users, products, "
    "order_day_stats, order_month_stats, order_status_counts, user_order_counts"
)


def pytest_report_header(config: pytest.Config) -> str:
    db = make_url(PG_URL).render_as_string(hide_password=True) if USE_PG else "sqlite"
    redis = REDIS_URL or "in-process"
    return f"order-service backend: database={db} redis={redis} fast_paths={FAST_PATHS}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FAST_PATHS == "on":
        return
    skip = pytest.mark.skip(reason="tests a fast path: TEST_FAST_PATHS=off")
    for item in items:
        if item.get_closest_marker("fast_paths"):
            item.add_marker(skip)


async def _create_pg_database(base_url: str) -> str:
    name = f"order_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = null_pool_engine(make_url(base_url).set(database="postgres").render_as_string(False))
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = null_pool_engine(make_url(url).set(database="postgres").render_as_string(False))
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database at the latest migration: PostgreSQL, or a SQLite template file."""
    if USE_PG:
        url = asyncio.run(_create_pg_database(PG_URL))
        asyncio.run(upgrade_to_head(url))
        yield url
        asyncio.run(_drop_pg_database(url))
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(upgrade_to_head(url))
        yield url


async def _reset_pg(url: str) -> None:
    engine = null_pool_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
        await conn.execute(
            text(
                "INSERT INTO products (sku, name, price_cents, updated_at) VALUES "
                "('WIDGET-001', 'Widget', 1000, now()), ('GADGET-002', 'Gadget', 1000, now())"
            )
        )
    await engine.dispose()


@pytest.fixture
async def database_url(migrated_database: str, tmp_path: Path) -> str:
    """A fresh, migrated database holding only the default catalog."""
    if USE_PG:
        await _reset_pg(migrated_database)
        return migrated_database
    template = Path(make_url(migrated_database).database or "")
    target = tmp_path / "orders.db"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def settings_factory(database_url: str) -> Any:
    # One Redis key prefix per test (shared by the apps a test builds): ids restart with
    # every fresh database, so limits and cached answers must not carry across tests.
    redis_prefix = f"test-{uuid.uuid4().hex[:12]}:"

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "redis_key_prefix": redis_prefix,
            "app_env": "test",
            "bcrypt_rounds": 4,
            "payment_retry_base_seconds": 0.01,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory()


async def _started(app: Starlette) -> AsyncIterator[Starlette]:
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    async for started in _started(create_app(settings)):
        yield started


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield GraphQLClient(http, app)


@pytest.fixture
async def client_factory(settings_factory: Any) -> AsyncIterator[Any]:
    """Clients of apps with settings of the test's choosing (all share the database)."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> GraphQLClient:
            app = create_app(settings_factory(**overrides))
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
            )
            return GraphQLClient(http, app)

        yield make


@pytest.fixture
async def admin_token(client: GraphQLClient) -> str:
    return await client.make_admin("admin@example.com")


@pytest.fixture
async def user_token(client: GraphQLClient) -> str:
    return await client.signup("user@example.com")
