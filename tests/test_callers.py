"""Callers remembered per instance: a query reads no caller row while the caller's cache
generation holds, a role change through the service is seen by every instance at once,
and a change behind the service's back within USER_CACHE_SECONDS."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import col

from infra.security import create_access_token
from infra.settings import Settings
from models.rows import UserRow
from models.state import Role
from models.tables import User
from resolvers import accounts
from resolvers.context import Callers, RequestContext, Services
from tests import test_cache
from tests.client import GraphQLClient
from tests.ops_support import ORDER, ORDERS, new_order, running, shared_redis
from tests.test_cache import Pair, demote, listed
from tests.test_cli import run_cli

# The two ways into the service of test_cache: one in-memory instance, or two sharing Redis.
pair, redis_url = test_cache.pair, test_cache.redis_url

PAGE = "query Page($l: Int!) { orders(limit: $l) { total items { id status } } }"
ME = "{ me { email role } }"


async def statements_of(
    client: GraphQLClient, query: str, token: str, variables: dict[str, Any] | None = None
) -> list[str]:
    with client.app.state.services.db.recording_statements() as statements:
        (await client.execute(query, variables, token)).ok()
    return statements


def travel(client: GraphQLClient, seconds: float, since: float | None = None) -> None:
    """Stop `client`'s instance's clock at `seconds` after `since` (default: now)."""
    services: Services = client.app.state.services
    at = (time.time() if since is None else since) + seconds
    services.clock = lambda: at


async def role_seen(client: GraphQLClient, token: str) -> str:
    return str((await client.execute(ME, token=token)).ok()["me"]["role"])


async def test_a_page_read_costs_one_statement_cold_and_none_warm(settings_factory: Any) -> None:
    async with running(settings_factory(cache_ttl_seconds=0)) as client:  # every read runs
        reader = await client.signup("reader@example.com")
        await new_order(client, reader, "t1")
        first = await statements_of(client, PAGE, reader, {"l": 10})
        assert len(first) == 2, first  # the caller, then the page (count, orders, lines)
        for limit in (10, 5):
            again = await statements_of(client, PAGE, reader, {"l": limit})
            assert len(again) == 1, again
            assert again[0] == first[1]

    async with running(settings_factory()) as client:  # the read cache on
        reader = await client.signup("reader-2@example.com")
        assert len(await statements_of(client, PAGE, reader, {"l": 10})) == 2  # first sight
        assert len(await statements_of(client, PAGE, reader, {"l": 5})) == 1  # a miss
        assert await statements_of(client, PAGE, reader, {"l": 5}) == []  # a hit


async def test_a_role_change_is_seen_at_once_on_every_instance(pair: Pair) -> None:
    one, two = pair
    alice = await one.signup("alice@example.com")
    order_id = (await new_order(one, alice, "a1"))["id"]
    boss = await one.make_admin("boss@example.com")
    for client in (one, two):
        for _ in range(2):  # the second time from what the instance remembers
            assert set(await listed(client, boss)) == {order_id}
            assert await role_seen(client, boss) == "ADMIN"
    assert await statements_of(two, ME, boss) == []

    await demote(one, "boss@example.com")
    for client in (one, two):
        assert await listed(client, boss) == {}  # a cached read
        assert (await client.execute(ORDER, {"id": order_id}, boss)).code == "NOT_FOUND"
        assert await role_seen(client, boss) == "USER"  # a read the cache does not keep
        upsert = 'mutation { upsertProduct(input: {sku: "X-1", name: "X", priceCents: 1}) { sku } }'
        assert (await client.execute(upsert, token=boss)).code == "FORBIDDEN"

    ctx = RequestContext(services=two.app.state.services, request_id="test")
    await accounts.set_role(ctx, "boss@example.com", Role.ADMIN)  # back, through the other
    for client in (one, two):
        assert await role_seen(client, boss) == "ADMIN"
        assert set(await listed(client, boss)) == {order_id}


async def test_a_change_behind_the_services_back_counts_within_the_bound(pair: Pair) -> None:
    one, two = pair
    alice = await one.signup("alice@example.com")
    order_id = (await new_order(one, alice, "a1"))["id"]
    boss = await one.make_admin("boss@example.com")
    before = time.time()
    for client in (one, two):
        assert set(await listed(client, boss)) == {order_id}
        assert await role_seen(client, boss) == "ADMIN"
    after = time.time()

    # No generation replaced: as if the invalidation were lost.
    async with one.app.state.services.db.transaction() as session:
        await session.execute(
            update(User).where(col(User.email) == "boss@example.com").values(role="USER")
        )
    bound: int = one.app.state.settings.user_cache_seconds
    assert bound <= 60  # the contract: within a minute
    for client in (one, two):
        travel(client, bound - 1, since=before)
        assert await role_seen(client, boss) == "ADMIN"  # still what the instance read
    for client in (one, two):
        travel(client, bound + 0.5, since=after)
        assert await role_seen(client, boss) == "USER"
        assert await listed(client, boss) == {}


async def test_a_write_reads_its_caller_and_refreshes_what_is_remembered(
    client: GraphQLClient,
) -> None:
    boss = await client.make_admin("boss@example.com")
    alice = await client.signup("alice@example.com")
    order_id = (await new_order(client, alice, "a1"))["id"]
    assert await role_seen(client, boss) == "ADMIN"
    async with client.app.state.services.db.transaction() as session:
        await session.execute(
            update(User).where(col(User.email) == "boss@example.com").values(role="USER")
        )
    assert (await client.move(boss, order_id, "CANCELLED", 1)).code == "FORBIDDEN"
    assert await role_seen(client, boss) == "USER"
    assert await listed(client, boss) == {}


async def test_tokens_of_users_that_do_not_exist_are_refused(
    client: GraphQLClient, settings: Settings
) -> None:
    secret = settings.secret_key.get_secret_value()
    nobody = create_access_token(999_999, "ADMIN", secret=secret, expires_minutes=5)
    for _ in range(2):
        assert (await client.execute(ORDERS, token=nobody)).code == "UNAUTHENTICATED"
        assert (await client.execute(ME, token=nobody)).code == "UNAUTHENTICATED"

    # Deleted while remembered: a write reads the row, is refused, and the instance
    # forgets the user at once.
    gone = await client.signup("gone@example.com")
    await new_order(client, gone, "g1")
    assert len(await listed(client, gone)) == 1
    async with client.app.state.services.db.transaction() as session:
        await session.execute(delete(User).where(col(User.email) == "gone@example.com"))
    assert (await client.create_order(gone, "g2")).code == "UNAUTHENTICATED"
    assert (await client.execute(ORDERS, token=gone)).code == "UNAUTHENTICATED"
    assert (await client.execute(ME, token=gone)).code == "UNAUTHENTICATED"

    # Deleted while remembered, and only read since: refused within the bound.
    left = await client.signup("left@example.com")
    assert await role_seen(client, left) == "USER"
    async with client.app.state.services.db.transaction() as session:
        await session.execute(delete(User).where(col(User.email) == "left@example.com"))
    travel(client, settings.user_cache_seconds + 0.5)
    assert (await client.execute(ME, token=left)).code == "UNAUTHENTICATED"
    assert (await client.execute(ORDERS, token=left)).code == "UNAUTHENTICATED"


async def test_zero_seconds_reads_the_caller_every_time(settings_factory: Any) -> None:
    async with running(settings_factory(user_cache_seconds=0, cache_ttl_seconds=0)) as client:
        reader = await client.signup("reader@example.com")
        for _ in range(2):
            assert len(await statements_of(client, PAGE, reader, {"l": 10})) == 2


def _user(user_id: int) -> UserRow:
    return UserRow(id=user_id, email=f"u{user_id}@example.com", role="USER", created_at=None)  # type: ignore[call-arg]


def test_the_memory_is_bounded_least_recently_used_first() -> None:
    callers = Callers(seconds=50, max_entries=2)
    for user_id in (1, 2):
        callers.remember(_user(user_id), "s", read_at=100.0)
    assert callers.recall(1, 101.0) is not None  # 1 used last: 2 goes first
    callers.remember(_user(3), "s", read_at=101.0)
    assert len(callers) == 2
    assert callers.recall(2, 101.0) is None
    assert callers.recall(1, 101.0) is not None and callers.recall(3, 101.0) is not None
    assert callers.recall(1, 151.0) is None  # past the bound
    assert callers.recall(3, 99.0) is None  # a clock gone back: not trusted


async def test_set_role_from_the_command_line_reaches_a_running_instance(
    settings_factory: Any, database_url: str
) -> None:
    with shared_redis() as url:
        settings = settings_factory(redis_url=url)
        async with running(settings) as client:
            boss = await client.make_admin("boss@example.com")
            for _ in range(2):
                assert await role_seen(client, boss) == "ADMIN"
            env = {
                "DATABASE_URL": database_url,
                "REDIS_URL": url,
                "REDIS_KEY_PREFIX": settings.redis_key_prefix,
            }
            args = ("set-role", "--email", "Boss@Example.com", "--role", "USER")
            done = await asyncio.to_thread(run_cli, *args, env=env)
            assert done.returncode == 0, done.stderr
            assert "boss@example.com is now USER" in done.stdout
            assert await role_seen(client, boss) == "USER"
            assert await listed(client, boss) == {}

            missing = ("set-role", "--email", "nobody@example.com", "--role", "ADMIN")
            refused = await asyncio.to_thread(run_cli, *missing, env=env)
            assert refused.returncode != 0 and "nobody@example.com" in refused.stderr
