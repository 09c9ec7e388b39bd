"""No expiry stampede: a stale hot entry is refreshed by one request (across instances)
while the others serve it, an expired one is computed once per instance, and a refresh
that fails leaves the stored answer served until it expires."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from infra.cache import Flights
from models.db import Database
from server.transport.cache import REFRESH_WINDOW
from tests import test_cache
from tests.client import GraphQLClient, Result
from tests.ops_support import new_order
from tests.test_cache import Pair
from tests.test_callers import travel

pair, redis_url = test_cache.pair, test_cache.redis_url

PAGE = "query Page { orders(limit: 10) { total items { id status version } } }"
BURST = 32


def databases(clients: tuple[GraphQLClient, ...]) -> list[Database]:
    found: list[Database] = []
    for client in clients:
        db = client.app.state.services.db
        if db not in found:
            found.append(db)
    return found


@contextmanager
def counting(clients: tuple[GraphQLClient, ...]) -> Iterator[list[str]]:
    """Every statement the instances run while the block runs (each database once)."""
    everything: list[str] = []
    with contextlib_all([db.recording_statements() for db in databases(clients)]) as lists:
        yield everything
    for statements in lists:
        everything.extend(statements)


@contextmanager
def contextlib_all(managers: list[Any]) -> Iterator[list[Any]]:
    entered = [m.__enter__() for m in managers]
    try:
        yield entered
    finally:
        for m in reversed(managers):
            m.__exit__(None, None, None)


async def burst(clients: tuple[GraphQLClient, ...], token: str) -> list[Result]:
    return await asyncio.gather(
        *(client.execute(PAGE, token=token) for client in clients for _ in range(BURST))
    )


@asynccontextmanager
async def warmed(
    pair: Pair,
) -> AsyncIterator[tuple[tuple[GraphQLClient, ...], str, int, Any, float]]:
    """Both instances know the reader and hold its page; (instances, token, statements
    of one computation of the page, the page, a time after the page was stored)."""
    one, two = pair
    reader = await one.signup("reader@example.com")
    await new_order(one, reader, "t1")
    clients = (one, two) if one is not two else (one,)
    first = (await one.execute(PAGE, token=reader)).ok()
    stored = time.time()  # the entry was stored before this
    for client in clients:
        assert (await client.execute(PAGE, token=reader)).ok() == first
    # What one computation of the page costs: the same page under another operation name.
    with counting((one,)) as statements:
        (await one.execute(PAGE.replace("Page", "Other"), token=reader)).ok()
    yield clients, reader, len(statements), first, stored


async def test_a_stale_hot_entry_is_refreshed_by_one_request(pair: Pair) -> None:
    async with warmed(pair) as (clients, reader, cost, page, stored):
        ttl = clients[0].app.state.settings.cache_ttl_seconds
        assert cost >= 1
        for client in clients:  # past any entry's refresh time, before its expiry
            travel(client, ttl * (1 - REFRESH_WINDOW[0]) + 0.05, since=stored)
        with counting(clients) as statements:
            answers = await burst(clients, reader)
        assert all(a.ok() == page for a in answers)
        assert len(statements) == cost  # one refresh, on one instance
        with counting(clients) as statements:
            answers = await burst(clients, reader)
        assert all(a.ok() == page for a in answers)
        assert statements == []  # refreshed: fresh again everywhere


async def test_an_expired_entry_is_computed_once_per_instance(pair: Pair) -> None:
    async with warmed(pair) as (clients, reader, cost, page, stored):
        ttl = clients[0].app.state.settings.cache_ttl_seconds
        for client in clients:
            travel(client, ttl + 0.1, since=stored)
        with counting(clients) as statements:
            answers = await burst(clients, reader)
        assert all(a.ok() == page for a in answers)
        assert cost <= len(statements) <= cost * len(clients)


async def test_entries_stored_together_go_stale_at_different_times(
    client: GraphQLClient,
) -> None:
    reader = await client.signup("reader@example.com")
    await new_order(client, reader, "t1")
    pages = [f"query P{n} {{ orders(limit: {n + 1}) {{ total }} }}" for n in range(20)]
    first_stored = time.time()
    for query in pages:
        (await client.execute(query, token=reader)).ok()
    ttl = client.app.state.settings.cache_ttl_seconds
    middle = (REFRESH_WINDOW[0] + REFRESH_WINDOW[1]) / 2
    travel(client, ttl * (1 - middle), since=first_stored)
    db = client.app.state.services.db
    refreshed = 0
    for query in pages:
        with db.recording_statements() as statements:
            (await client.execute(query, token=reader)).ok()
        refreshed += bool(statements)
    assert 0 < refreshed < len(pages)


async def test_a_failed_refresh_serves_the_stored_answer_until_it_expires(
    client: GraphQLClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = await client.signup("reader@example.com")
    await new_order(client, reader, "t1")
    page = (await client.execute(PAGE, token=reader)).ok()
    stored = time.time()
    assert (await client.execute(PAGE, token=reader)).ok() == page
    services = client.app.state.services
    connect = services.db.connect

    def down() -> Any:
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(services.db, "connect", down)
    ttl = client.app.state.settings.cache_ttl_seconds
    caplog.set_level(logging.WARNING, logger="order_service.cache")
    # Refreshes no sooner than the backoff after a failure (and, with Redis, the claim).
    services.flights = Flights(backoff=0.5)
    stale = ttl * (1 - REFRESH_WINDOW[0]) + 0.05
    for offset in (stale, stale + 0.6):
        travel(client, offset, since=stored)
        answers = await burst((client,), reader)
        assert all(a.ok() == page for a in answers)
    failures = [r for r in caplog.records if "refreshing a cached answer failed" in r.message]
    assert len(failures) == 1

    travel(client, ttl + 0.1, since=stored)  # expired: nothing left to serve
    assert (await client.execute(PAGE, token=reader)).code == "INTERNAL_SERVER_ERROR"
    monkeypatch.setattr(services.db, "connect", connect)
    assert (await client.execute(PAGE, token=reader)).ok() == page
