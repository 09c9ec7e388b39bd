"""The back office API (contract v2): order sorts and date bounds, orderStats, dead letters
and their retry, refunds (once, however asked or delivered), as a client observes them."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, update

from models import queries
from models.sql import Statement
from tests.client import GraphQLClient
from tests.provider_server import (
    ScriptedProvider,
    Step,
    initiate,
    new_order,
    open_client,
    post_webhook,
    read_order,
    scripted_provider,
)

ORDERS = """
query($sort: OrderSort, $from: DateTime, $to: DateTime, $page: Int! = 1, $limit: Int! = 100,
      $status: OrderStatus) {
  orders(sort: $sort, createdFrom: $from, createdTo: $to, page: $page, limit: $limit,
         status: $status) {
    total pages items { id amountCents createdAt updatedAt status }
  }
}
"""
STATS = """
query($from: DateTime!, $to: DateTime!) {
  orderStats(from: $from, to: $to) { day status orders amountCents }
}
"""
DEAD_LETTERS = """
query($page: Int! = 1, $limit: Int! = 20) {
  paymentDeadLetters(page: $page, limit: $limit) {
    total page limit pages
    items { id orderId paymentId attempts lastError createdAt retriedAt }
  }
}
"""
RETRY = """
mutation($id: ID!) {
  retryDeadLetter(input: {id: $id}) { id orderId status needsRefund amountCents }
}
"""
REFUND = """
mutation($id: ID!) {
  refundPayment(input: {paymentId: $id}) { id orderId status needsRefund amountCents }
}
"""
PAYMENT_OF = (
    "query($id: ID!) { order(id: $id) { status version payment { id status needsRefund } } }"
)

_SET_ORDER = Statement(
    lambda d: (
        update(queries.orders)
        .where(queries.orders.c.id == bindparam("id"))
        .values(
            created_at=bindparam("created_at"),
            updated_at=bindparam("updated_at"),
            amount_cents=bindparam("amount_cents"),
        )
    )
)


async def _set_order(
    client: GraphQLClient, order_id: str, *, created: datetime, updated: datetime, amount: int
) -> None:
    """Backdate an order and set its amount (the figures' triggers follow)."""
    async with client.app.state.services.db.begin() as conn:
        await conn.execute(
            _SET_ORDER,
            id=int(order_id),
            created_at=created,
            updated_at=updated,
            amount_cents=amount,
        )
    await client.app.state.services.cache.bump(["orders:all"])


def _iso(value: datetime) -> str:
    return value.isoformat()


@pytest.fixture
def provider() -> Iterator[ScriptedProvider]:
    with scripted_provider() as p:
        yield p


@pytest.fixture
async def paying(settings_factory: Any, provider: ScriptedProvider) -> AsyncIterator[GraphQLClient]:
    settings = settings_factory(
        payment_provider_url=provider.url,
        payment_provider_timeout_seconds=0.5,
        payment_retry_base_seconds=0.01,
        rate_limit_orders_per_minute=0,
    )
    async with open_client(settings) as client:
        yield client


# --- sorts and date bounds --------------------------------------------------------------

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def _orders_with_ties(client: GraphQLClient, token: str) -> list[dict[str, Any]]:
    """Nine orders: created at three instants, three to an instant, with amounts and
    updates that tie in threes too."""
    made = []
    for n in range(9):
        order_id = await new_order(client, token, f"tie-{n}")
        created = BASE + timedelta(hours=n // 3)
        updated = BASE + timedelta(days=3, hours=n % 3)
        amount = 1000 * (1 + (n * 7) % 3)
        await _set_order(client, order_id, created=created, updated=updated, amount=amount)
        made.append({"id": int(order_id), "created": created, "updated": updated, "amount": amount})
    return made


async def test_every_sort_orders_as_asked_and_breaks_ties_by_id_newest_first(
    client_factory: Any,
) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin = await client.make_admin("admin@example.com")
    made = await _orders_with_ties(client, await client.signup("u@example.com"))
    expected = {
        "NEWEST": sorted(made, key=lambda o: (-o["created"].timestamp(), -o["id"])),
        "OLDEST": sorted(made, key=lambda o: (o["created"].timestamp(), -o["id"])),
        "RECENTLY_UPDATED": sorted(made, key=lambda o: (-o["updated"].timestamp(), -o["id"])),
        "AMOUNT_HIGH": sorted(made, key=lambda o: (-o["amount"], -o["id"])),
        "AMOUNT_LOW": sorted(made, key=lambda o: (o["amount"], -o["id"])),
    }
    for sort, want in expected.items():
        page = (await client.execute(ORDERS, {"sort": sort}, admin)).ok()["orders"]
        assert [int(o["id"]) for o in page["items"]] == [o["id"] for o in want], sort
        # Page by page: the same order, no order twice, none left out.
        paged: list[int] = []
        for number in (1, 2, 3, 4, 5, 6):
            part = await client.execute(ORDERS, {"sort": sort, "page": number, "limit": 2}, admin)
            paged += [int(o["id"]) for o in part.ok()["orders"]["items"]]
        assert paged == [o["id"] for o in want], sort
    # No sort, and an explicit null: newest first, as in v1.
    for variables in ({}, {"sort": None}):
        page = (await client.execute(ORDERS, variables, admin)).ok()["orders"]
        assert [int(o["id"]) for o in page["items"]] == [o["id"] for o in expected["NEWEST"]]


async def test_created_from_is_inclusive_and_created_to_exclusive(
    client_factory: Any,
) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin = await client.make_admin("admin@example.com")
    user = await client.signup("u@example.com")
    made = await _orders_with_ties(client, user)
    at = [BASE + timedelta(hours=h) for h in range(3)]

    async def ids(variables: dict[str, Any], token: str = admin) -> set[int]:
        page = (await client.execute(ORDERS, variables, token)).ok()["orders"]
        assert page["total"] == len(page["items"])
        return {int(o["id"]) for o in page["items"]}

    def created(*instants: datetime) -> set[int]:
        return {o["id"] for o in made if o["created"] in instants}

    assert await ids({"from": _iso(at[1])}) == created(at[1], at[2])
    assert await ids({"to": _iso(at[1])}) == created(at[0])
    assert await ids({"from": _iso(at[1]), "to": _iso(at[2])}) == created(at[1])
    assert await ids({"from": _iso(at[1]), "to": _iso(at[1])}) == set()
    # Another offset names the same instant; one without an offset is UTC.
    paris = at[1].astimezone(ZoneInfo("Europe/Paris"))
    assert await ids({"from": paris.isoformat()}) == created(at[1], at[2])
    assert await ids({"from": at[1].replace(tzinfo=None).isoformat()}) == created(at[1], at[2])
    # Bounds combine with the other filters, and a USER sees only their own.
    assert await ids({"from": _iso(at[2]), "status": "PENDING"}, user) == created(at[2])
    other = await client.signup("other@example.com")
    assert await ids({"from": _iso(at[0])}, other) == set()

    bad = await client.execute(ORDERS, {"from": _iso(at[2]), "to": _iso(at[1])}, admin)
    assert bad.code == "BAD_USER_INPUT"
    assert bad.ext["fieldErrors"] == [
        {"field": "createdTo", "message": "must not be before createdFrom"}
    ]
    garbage = await client.execute(ORDERS, {"from": "yesterday"}, admin)
    assert garbage.errors and garbage.data is None


async def test_a_sorted_filtered_page_is_still_three_statements(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin = await client.make_admin("admin@example.com")
    await _orders_with_ties(client, await client.signup("u@example.com"))
    query = """query($from: DateTime) { orders(sort: AMOUNT_HIGH, createdFrom: $from, limit: 5) {
      total items { id items { sku } user { email } payment { id needsRefund } } } }"""
    db = client.app.state.services.db
    with db.recording_statements() as statements:
        (await client.execute(query, {"from": _iso(BASE)}, admin)).ok()
    assert len(statements) == 3, statements  # the caller; page+lines+owners; payments


# --- orderStats -------------------------------------------------------------------------


def _hand_count(made: list[dict[str, Any]], start: datetime, end: datetime) -> list[dict]:
    counts: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    for o in made:
        if start <= o["created"] < end:
            entry = counts[(o["created"].date().isoformat(), o["status"])]
            entry[0] += 1
            entry[1] += o["amount"]
    rank = ["PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"]
    return [
        {"day": day, "status": status, "orders": n, "amountCents": amount}
        for (day, status), (n, amount) in sorted(
            counts.items(), key=lambda kv: (kv[0][0], rank.index(kv[0][1]))
        )
    ]


async def _spread_orders(client: GraphQLClient, admin: str, count: int) -> list[dict[str, Any]]:
    """Orders of two users over ten days around month ends, at random hours, amounts and
    statuses (moved by updateOrderStatus, so the figures follow real writes)."""
    rng = random.Random(17)
    users = [await client.signup(f"s{n}@example.com") for n in range(2)]
    start = datetime(2026, 10, 27, tzinfo=UTC)
    paths = [[], ["PAID"], ["PAID", "SHIPPED"], ["CANCELLED"], ["PAID", "CANCELLED"]]
    made = []
    for n in range(count):
        order_id = await new_order(client, users[n % 2], f"spread-{n}")
        created = start + timedelta(seconds=rng.randrange(10 * 86400))
        if n % 7 == 0:
            created = created.replace(hour=0, minute=0, second=0, microsecond=0)
        amount = rng.randrange(1, 50_000)
        await _set_order(client, order_id, created=created, updated=created, amount=amount)
        path = paths[n % len(paths)]
        for version, status in enumerate(path, start=1):
            (await client.move(admin, order_id, status, version)).ok()
        made.append(
            {
                "id": order_id,
                "created": created,
                "amount": amount,
                "status": (path or ["PENDING"])[-1],
            }
        )
    return made


async def test_order_stats_match_a_hand_count_whatever_the_bounds(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin = await client.make_admin("admin@example.com")
    made = await _spread_orders(client, admin, 60)
    day = timedelta(days=1)
    first = datetime(2026, 10, 27, tzinfo=UTC)
    ranges = [
        (first, first + 10 * day),  # whole days only
        (first - 100 * day, first + 200 * day),  # beyond the orders on both sides
        (first + timedelta(hours=5, minutes=3), first + 7 * day + timedelta(hours=2)),
        (first + 2 * day + timedelta(hours=1), first + 2 * day + timedelta(hours=20)),  # one day
        (first + 3 * day - timedelta(seconds=1), first + 3 * day + timedelta(seconds=1)),
        (first + 4 * day, first + 4 * day),  # empty
        (first + 5 * day + timedelta(hours=23), first + 6 * day + timedelta(hours=1)),
    ]
    for o in made[::7]:  # an order created exactly at a bound is in [from, to) once
        ranges.append((o["created"], o["created"] + day))
        ranges.append((o["created"] - day, o["created"]))
    for start, end in ranges:
        got = (await client.execute(STATS, {"from": _iso(start), "to": _iso(end)}, admin)).ok()
        assert got["orderStats"] == _hand_count(made, start, end), (start, end)

    # Other offsets name the same instants.
    start, end = ranges[2]
    tz = timezone(timedelta(hours=-5))
    shifted = {"from": start.astimezone(tz).isoformat(), "to": end.astimezone(tz).isoformat()}
    got = (await client.execute(STATS, shifted, admin)).ok()["orderStats"]
    assert got == _hand_count(made, start, end)


async def test_order_stats_follow_every_write(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin = await client.make_admin("admin@example.com")
    user = await client.signup("u@example.com")
    now = datetime.now(UTC)
    window = {"from": _iso(now - timedelta(days=1)), "to": _iso(now + timedelta(days=1))}

    async def figures() -> dict[str, tuple[int, int]]:
        rows = (await client.execute(STATS, window, admin)).ok()["orderStats"]
        return {r["status"]: (r["orders"], r["amountCents"]) for r in rows}

    assert await figures() == {}
    first = await new_order(client, user, "a")
    second = await new_order(client, user, "b")
    assert await figures() == {"PENDING": (2, 2000)}  # read-your-writes through the cache
    (await client.move(admin, first, "PAID", 1)).ok()
    assert await figures() == {"PENDING": (1, 1000), "PAID": (1, 1000)}
    (await client.move(admin, second, "CANCELLED", 1)).ok()
    assert await figures() == {"PAID": (1, 1000), "CANCELLED": (1, 1000)}


async def test_racing_writes_keep_the_figures_exact(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin = await client.make_admin("admin@example.com")
    users = [await client.signup(f"r{n}@example.com") for n in range(4)]
    created = await asyncio.gather(
        *(new_order(client, users[n % 4], f"race-{n}") for n in range(40))
    )
    moves = await asyncio.gather(
        *(
            client.move(admin, order_id, "PAID" if n % 2 else "CANCELLED", 1)
            for n, order_id in enumerate(created)
        )
    )
    assert all(not m.errors for m in moves)
    now = datetime.now(UTC)
    window = {"from": _iso(now - timedelta(days=1)), "to": _iso(now + timedelta(days=1))}
    rows = (await client.execute(STATS, window, admin)).ok()["orderStats"]
    assert {r["status"]: r["orders"] for r in rows} == {"PAID": 20, "CANCELLED": 20}


async def test_order_stats_is_for_admins_and_at_most_366_days(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ok = {"from": _iso(start), "to": _iso(start + timedelta(days=366))}
    assert (await client.execute(STATS, ok, admin_token)).ok() == {"orderStats": []}
    too_long = {"from": _iso(start), "to": _iso(start + timedelta(days=366, seconds=1))}
    result = await client.execute(STATS, too_long, admin_token)
    assert result.code == "BAD_USER_INPUT"
    assert result.ext["fieldErrors"] == [
        {"field": "to", "message": "must be at most 366 days after from"}
    ]
    backwards = await client.execute(STATS, {"from": ok["to"], "to": ok["from"]}, admin_token)
    assert backwards.code == "BAD_USER_INPUT"
    assert (await client.execute(STATS, ok, user_token)).code == "FORBIDDEN"
    assert (await client.execute(STATS, ok)).code == "UNAUTHENTICATED"
    # The ends of the calendar are answered, or refused as input, never a crash.
    for start, end in (
        ("9999-12-31T01:00:00+00:00", "9999-12-31T05:00:00+00:00"),
        ("9999-12-30T01:00:00+00:00", "9999-12-31T23:59:59+00:00"),
        ("0001-01-01T00:00:00+00:00", "0001-01-02T01:00:00+00:00"),
    ):
        edge = await client.execute(STATS, {"from": start, "to": end}, admin_token)
        assert edge.ok() == {"orderStats": []}, (start, end)
    beyond = {"from": "0001-01-01T00:00:00+05:00", "to": ok["to"]}
    refused = await client.execute(STATS, beyond, admin_token)
    assert refused.code == "BAD_USER_INPUT"
    assert refused.ext["fieldErrors"][0] == {"field": "from", "message": "is out of range"}
    refused = await client.execute(ORDERS, {"from": beyond["from"]}, admin_token)
    assert refused.code == "BAD_USER_INPUT"


async def test_order_stats_is_one_statement_and_costs_its_longest_answer(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    await new_order(client, user_token)
    now = datetime.now(UTC)
    window = {"from": _iso(now - timedelta(days=30, hours=5)), "to": _iso(now + timedelta(hours=1))}
    db = client.app.state.services.db
    with db.recording_statements() as statements:
        result = await client.execute(STATS, window, admin_token)
    assert [r["orders"] for r in result.ok()["orderStats"]] == [1]
    assert len(statements) == 2, statements  # the caller; the figures
    assert result.body["extensions"]["cost"]["requested"] == 366 * 5


# --- dead letters -----------------------------------------------------------------------


async def test_dead_letters_newest_first_paged_and_retried_once_the_provider_recovers(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    orders = [await new_order(paying, user, f"dl-{n}") for n in range(3)]
    for order_id in orders:
        provider.script(Step(500), Step(503), Step(502))
        assert (await initiate(paying, user, order_id)).code == "PAYMENT_PROVIDER_UNAVAILABLE"

    with paying.app.state.services.db.recording_statements() as statements:
        page = (await paying.execute(DEAD_LETTERS, {"limit": 2}, admin)).ok()["paymentDeadLetters"]
    assert len(statements) == 2, statements  # the caller; the count and the page
    assert (page["total"], page["page"], page["limit"], page["pages"]) == (3, 1, 2, 2)
    assert [d["orderId"] for d in page["items"]] == [orders[2], orders[1]]
    letter = page["items"][0]
    assert letter["attempts"] == 3 and "502" in letter["lastError"]
    assert letter["paymentId"].startswith("pay_") and letter["retriedAt"] is None
    rest = (await paying.execute(DEAD_LETTERS, {"page": 2, "limit": 2}, admin)).ok()
    assert [d["orderId"] for d in rest["paymentDeadLetters"]["items"]] == [orders[0]]

    # The provider is back.
    asked = len(provider.requests)
    payment = (await paying.execute(RETRY, {"id": letter["id"]}, admin)).ok()["retryDeadLetter"]
    assert (payment["orderId"], payment["status"], payment["needsRefund"]) == (
        orders[2],
        "PENDING",
        False,
    )
    assert len(provider.requests) == asked + 1
    assert (await read_order(paying, user, orders[2]))["payment"]["id"] == payment["id"]
    page = (await paying.execute(DEAD_LETTERS, {}, admin)).ok()["paymentDeadLetters"]
    retried = {d["id"]: d["retriedAt"] for d in page["items"]}
    assert retried[letter["id"]] is not None  # read-your-writes: the stamp shows at once
    assert sum(v is not None for v in retried.values()) == 1

    # Asking again while that payment is PENDING returns it, as initiatePayment does.
    again = (await paying.execute(RETRY, {"id": letter["id"]}, admin)).ok()["retryDeadLetter"]
    assert again["id"] == payment["id"]


async def test_a_retry_that_fails_again_is_stamped_and_dead_lettered_anew(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id = await new_order(paying, user)
    provider.script(Step(500), Step(500), Step(500))
    assert (await initiate(paying, user, order_id)).code == "PAYMENT_PROVIDER_UNAVAILABLE"
    [letter] = (await paying.execute(DEAD_LETTERS, {}, admin)).ok()["paymentDeadLetters"]["items"]

    provider.script(Step(500), Step(500), Step(500))
    result = await paying.execute(RETRY, {"id": letter["id"]}, admin)

    assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE"
    page = (await paying.execute(DEAD_LETTERS, {}, admin)).ok()["paymentDeadLetters"]
    assert page["total"] == 2
    newest, oldest = page["items"]
    assert oldest["id"] == letter["id"] and oldest["retriedAt"] is not None
    assert newest["retriedAt"] is None and newest["orderId"] == order_id


async def test_retrying_needs_an_admin_a_known_letter_and_a_pending_order(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id = await new_order(paying, user)
    provider.script(Step(500), Step(500), Step(500))
    assert (await initiate(paying, user, order_id)).code == "PAYMENT_PROVIDER_UNAVAILABLE"
    [letter] = (await paying.execute(DEAD_LETTERS, {}, admin)).ok()["paymentDeadLetters"]["items"]
    asked = len(provider.requests)

    assert (await paying.execute(DEAD_LETTERS, {}, user)).code == "FORBIDDEN"
    assert (await paying.execute(DEAD_LETTERS, {})).code == "UNAUTHENTICATED"
    assert (await paying.execute(RETRY, {"id": letter["id"]}, user)).code == "FORBIDDEN"
    for unknown in ("999999", "abc", "-1", "99999999999999999999"):
        assert (await paying.execute(RETRY, {"id": unknown}, admin)).code == "NOT_FOUND"
    bad = await paying.execute(DEAD_LETTERS, {"page": 0, "limit": 101}, admin)
    assert bad.code == "BAD_USER_INPUT"
    assert {e["field"] for e in bad.ext["fieldErrors"]} == {"page", "limit"}

    (await paying.move(admin, order_id, "CANCELLED", 1)).ok()
    refused = await paying.execute(RETRY, {"id": letter["id"]}, admin)
    assert refused.code == "INVALID_TRANSITION"
    assert len(provider.requests) == asked  # nobody asked the provider
    page = (await paying.execute(DEAD_LETTERS, {}, admin)).ok()["paymentDeadLetters"]
    assert page["items"][0]["retriedAt"] is None


# --- refunds ----------------------------------------------------------------------------


async def _paid_order(client: GraphQLClient, user: str, token: str = "t1") -> tuple[str, str]:
    """A PAID order (paid by the provider's SUCCESS webhook) and its payment's id."""
    order_id = await new_order(client, user, token)
    payment = (await initiate(client, user, order_id)).ok()["initiatePayment"]
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment["id"], "order_id": order_id, "status": "SUCCESS"}
    assert (await post_webhook(client, event, secret)).json() == {"status": "processed"}
    return order_id, payment["id"]


def _refund_calls(provider: ScriptedProvider) -> list[Any]:
    return [r for r in provider.requests if "provider_reference" in r.body]


async def test_cancelling_a_paid_order_flags_its_payment_and_refund_payment_refunds_it(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id, payment_id = await _paid_order(paying, user)
    before = (await paying.execute(PAYMENT_OF, {"id": order_id}, user)).ok()["order"]
    assert before["payment"] == {"id": payment_id, "status": "SUCCEEDED", "needsRefund": False}

    (await paying.move(admin, order_id, "CANCELLED", 2)).ok()
    flagged = (await paying.execute(PAYMENT_OF, {"id": order_id}, user)).ok()["order"]
    assert flagged["payment"] == {"id": payment_id, "status": "SUCCEEDED", "needsRefund": True}

    refunded = (await paying.execute(REFUND, {"id": payment_id}, admin)).ok()["refundPayment"]

    assert refunded == {
        "id": payment_id,
        "orderId": order_id,
        "status": "REFUNDED",
        "needsRefund": False,
        "amountCents": 1000,
    }
    [call] = _refund_calls(provider)
    assert call.body == {
        "payment_id": payment_id,
        "provider_reference": f"ref-{payment_id}",
        "amount_cents": 1000,
        "currency": "USD",
    }
    assert provider.url.endswith("/payments")
    assert call.headers["idempotency-key"] == f"refund-{payment_id}"
    after = (await paying.execute(PAYMENT_OF, {"id": order_id}, user)).ok()["order"]
    assert after["payment"] == {"id": payment_id, "status": "REFUNDED", "needsRefund": False}
    assert (after["status"], after["version"]) == ("CANCELLED", 3)

    # Asked again: the same answer, and the provider is not asked again.
    again = (await paying.execute(REFUND, {"id": payment_id}, admin)).ok()["refundPayment"]
    assert again == refunded
    assert len(_refund_calls(provider)) == 1


async def test_forty_racing_refunds_call_the_provider_once(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id, payment_id = await _paid_order(paying, user)
    (await paying.move(admin, order_id, "CANCELLED", 2)).ok()
    provider.script(Step(delay=0.2))  # the refund takes a while: everyone races into it

    results = await asyncio.gather(
        *(paying.execute(REFUND, {"id": payment_id}, admin) for _ in range(40))
    )

    assert {r.ok()["refundPayment"]["status"] for r in results} == {"REFUNDED"}
    assert len(_refund_calls(provider)) == 1


async def test_a_refund_the_provider_refuses_is_dead_lettered_and_retried_later(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id, payment_id = await _paid_order(paying, user)
    (await paying.move(admin, order_id, "CANCELLED", 2)).ok()
    provider.script(Step(500), Step(429), Step(503))

    failed = await paying.execute(REFUND, {"id": payment_id}, admin)

    assert failed.code == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert len(_refund_calls(provider)) == 3
    still = (await paying.execute(PAYMENT_OF, {"id": order_id}, user)).ok()["order"]["payment"]
    assert (still["status"], still["needsRefund"]) == ("SUCCEEDED", True)
    [letter] = (await paying.execute(DEAD_LETTERS, {}, admin)).ok()["paymentDeadLetters"]["items"]
    assert (letter["paymentId"], letter["orderId"], letter["attempts"]) == (
        payment_id,
        order_id,
        3,
    )
    assert "503" in letter["lastError"]

    # The provider recovers: retrying the dead letter refunds (the order is not PENDING,
    # and need not be: it is a refund).
    retried = (await paying.execute(RETRY, {"id": letter["id"]}, admin)).ok()["retryDeadLetter"]
    assert (retried["id"], retried["status"], retried["needsRefund"]) == (
        payment_id,
        "REFUNDED",
        False,
    )
    assert len(_refund_calls(provider)) == 4
    again = (await paying.execute(RETRY, {"id": letter["id"]}, admin)).ok()["retryDeadLetter"]
    assert again["status"] == "REFUNDED" and len(_refund_calls(provider)) == 4


async def test_a_payment_that_needs_no_refund_is_an_invalid_transition(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    paid_id, paid_payment = await _paid_order(paying, user, "paid")  # PAID, not cancelled
    pending_order = await new_order(paying, user, "pending")
    pending = (await initiate(paying, user, pending_order)).ok()["initiatePayment"]

    for payment_id in (paid_payment, pending["id"]):
        result = await paying.execute(REFUND, {"id": payment_id}, admin)
        assert result.code == "INVALID_TRANSITION", payment_id
        assert result.data is None
    assert _refund_calls(provider) == []
    for unknown in ("pay_nope", "", "x" * 65):
        assert (await paying.execute(REFUND, {"id": unknown}, admin)).code == "NOT_FOUND"
    assert (await paying.execute(REFUND, {"id": paid_payment}, user)).code == "FORBIDDEN"
    assert (await paying.execute(REFUND, {"id": paid_payment})).code == "UNAUTHENTICATED"
    order = (await paying.execute(PAYMENT_OF, {"id": paid_id}, user)).ok()["order"]
    assert order["payment"]["status"] == "SUCCEEDED"


async def test_a_late_success_after_a_cancel_needs_a_refund(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    payment = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    (await client.move(admin_token, order_id, "CANCELLED", 1)).ok()
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment["id"], "order_id": order_id, "status": "SUCCESS"}
    assert (await post_webhook(client, event, secret)).json() == {"status": "refund_needed"}

    order = (await client.execute(PAYMENT_OF, {"id": order_id}, user_token)).ok()["order"]
    assert order["payment"]["needsRefund"] is True
    # The built-in simulated provider refunds too.
    refunded = await client.execute(REFUND, {"id": payment["id"]}, admin_token)
    assert refunded.ok()["refundPayment"]["status"] == "REFUNDED"


# --- the provider's own REFUNDED webhook ------------------------------------------------


async def test_a_refunded_webhook_refunds_once_however_often_it_is_delivered(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    order_id, payment_id = await _paid_order(client, user_token)
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment_id, "order_id": order_id, "status": "REFUNDED"}

    answers = await asyncio.gather(*(post_webhook(client, event, secret) for _ in range(10)))

    bodies = sorted(a.json()["status"] for a in answers)
    assert bodies == ["duplicate"] * 9 + ["processed"]
    assert {a.status_code for a in answers} == {200}
    order = (await client.execute(PAYMENT_OF, {"id": order_id}, user_token)).ok()["order"]
    assert order["payment"] == {"id": payment_id, "status": "REFUNDED", "needsRefund": False}
    assert (order["status"], order["version"]) == ("PAID", 2)  # the order itself is as it was

    # Later news changes nothing: a FAILED does not fail it, the SUCCESS again is a replay.
    late = {**event, "status": "FAILED"}
    assert (await post_webhook(client, late, secret)).json() == {"status": "ignored"}
    late = {**event, "status": "SUCCESS"}
    assert (await post_webhook(client, late, secret)).json() == {"status": "duplicate"}
    order = (await client.execute(PAYMENT_OF, {"id": order_id}, user_token)).ok()["order"]
    assert order["payment"]["status"] == "REFUNDED"
    # And refundPayment answers it as refunded.
    again = (await client.execute(REFUND, {"id": payment_id}, admin_token)).ok()
    assert again["refundPayment"]["status"] == "REFUNDED"


async def test_a_refunded_webhook_for_an_unpaid_payment_is_ignored(
    client: GraphQLClient, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    payment = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment["id"], "order_id": order_id, "status": "REFUNDED"}
    assert (await post_webhook(client, event, secret)).json() == {"status": "ignored"}
    order = (await client.execute(PAYMENT_OF, {"id": order_id}, user_token)).ok()["order"]
    assert order["payment"]["status"] == "PENDING"
    unsigned = await post_webhook(client, event, None)
    assert unsigned.status_code == 401
    wrong = await post_webhook(client, {**event, "status": "REFUND"}, secret)
    assert wrong.status_code == 400


async def test_refund_payment_racing_the_providers_webhook_calls_the_provider_at_most_once(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id, payment_id = await _paid_order(paying, user)
    (await paying.move(admin, order_id, "CANCELLED", 2)).ok()
    secret = bytes(paying.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment_id, "order_id": order_id, "status": "REFUNDED"}
    provider.script(Step(delay=0.1))

    results = await asyncio.gather(
        *(paying.execute(REFUND, {"id": payment_id}, admin) for _ in range(10)),
        *(post_webhook(paying, event, secret) for _ in range(5)),
    )

    refunds = [r.ok()["refundPayment"]["status"] for r in results[:10]]  # type: ignore[union-attr]
    assert set(refunds) == {"REFUNDED"}
    assert len(_refund_calls(provider)) <= 1
    order = (await paying.execute(PAYMENT_OF, {"id": order_id}, user)).ok()["order"]
    assert order["payment"]["status"] == "REFUNDED"
