"""initiatePayment against a real HTTP provider on loopback: retries, backoff, dead letters,
access rules, and one PENDING payment per order however the calls race."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from infra.provider import (
    PaymentProviderClient,
    PaymentRequest,
    ProviderFailed,
    backoff_cap,
    full_jitter,
)
from models.tables import Payment, PaymentDeadLetter
from tests.client import GraphQLClient
from tests.provider_server import (
    ScriptedProvider,
    Step,
    initiate,
    metric,
    new_order,
    open_client,
    read_order,
    scripted_provider,
)

ATTEMPTS = "payment_provider_attempts_total"


@pytest.fixture
def provider() -> Iterator[ScriptedProvider]:
    with scripted_provider() as p:
        yield p


@pytest.fixture
async def paying(settings_factory: Any, provider: ScriptedProvider) -> AsyncIterator[GraphQLClient]:
    """A client of an app whose PAYMENT_PROVIDER_URL is the scripted provider."""
    settings = settings_factory(
        payment_provider_url=provider.url,
        payment_provider_timeout_seconds=0.3,
        payment_retry_base_seconds=0.01,
        public_url="https://shop.example.com",
    )
    async with open_client(settings) as client:
        yield client


async def _count(client: GraphQLClient, model: Any, order_id: str) -> int:
    async with client.app.state.services.db.read() as session:
        stmt = select(func.count()).select_from(model).where(col(model.order_id) == int(order_id))
        return int((await session.execute(stmt)).scalar_one())


async def _dead_letters(client: GraphQLClient) -> list[PaymentDeadLetter]:
    async with client.app.state.services.db.read() as session:
        stmt = select(PaymentDeadLetter).order_by(col(PaymentDeadLetter.id))
        return list((await session.execute(stmt)).scalars())


async def test_success_on_first_attempt(paying: GraphQLClient, provider: ScriptedProvider) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)

    payment = (await initiate(paying, token, order_id)).ok()["initiatePayment"]

    assert payment["id"].startswith("pay_") and len(payment["id"]) >= 20
    assert payment["orderId"] == order_id
    assert payment["status"] == "PENDING"
    assert payment["amountCents"] == 1000
    assert payment["redirectUrl"] == f"https://checkout.provider.test/pay/{payment['id']}"
    [sent] = provider.requests
    assert sent.body == {
        "payment_id": payment["id"],
        "order_id": int(order_id),
        "amount_cents": 1000,
        "currency": "USD",
        "callback_url": "https://shop.example.com/payments/webhook",
    }
    assert sent.headers["idempotency-key"] == payment["id"]
    assert metric(paying, ATTEMPTS, outcome="success") == 1
    order = await read_order(paying, token, order_id)
    assert order["payment"]["id"] == payment["id"]
    assert order["status"] == "PENDING"


async def test_a_pending_payment_is_returned_again(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    first = (await initiate(paying, token, order_id)).ok()["initiatePayment"]
    again = (await initiate(paying, token, order_id)).ok()["initiatePayment"]
    assert again == first
    assert len(provider.requests) == 1
    assert await _count(paying, Payment, order_id) == 1


async def test_racing_calls_make_one_pending_payment(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    provider.script(*[Step(delay=0.05)] * 8)

    results = await asyncio.gather(*(initiate(paying, token, order_id) for _ in range(8)))

    ids = {r.ok()["initiatePayment"]["id"] for r in results}
    assert len(ids) == 1
    assert await _count(paying, Payment, order_id) == 1
    assert (await read_order(paying, token, order_id))["payment"]["id"] in ids


async def test_success_after_two_failures_takes_exactly_three_attempts(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    provider.script(Step(500), Step(503))

    payment = (await initiate(paying, token, order_id)).ok()["initiatePayment"]

    assert len(provider.requests) == 3
    assert {r.body["payment_id"] for r in provider.requests} == {payment["id"]}
    assert metric(paying, ATTEMPTS, outcome="retryable_status") == 2
    assert metric(paying, ATTEMPTS, outcome="success") == 1
    assert await _dead_letters(paying) == []


async def test_three_failures_dead_letter_and_leave_no_payment(
    paying: GraphQLClient, provider: ScriptedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    provider.script(Step(500), Step(429), Step(502))

    result = await initiate(paying, token, order_id)

    assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert result.data is None
    assert len(provider.requests) == 3
    [letter] = await _dead_letters(paying)
    assert letter.order_id == int(order_id)
    assert letter.payment_id == provider.requests[0].body["payment_id"]
    assert letter.attempts == 3
    assert "502" in letter.last_error
    assert letter.created_at is not None
    assert (await read_order(paying, token, order_id))["payment"] is None
    assert await _count(paying, Payment, order_id) == 0
    assert "after 3 attempts" in caplog.text
    assert "sha256" not in caplog.text and "secret" not in caplog.text.lower()

    # The provider is back: the next try works and is the order's only payment.
    payment = (await initiate(paying, token, order_id)).ok()["initiatePayment"]
    assert (await read_order(paying, token, order_id))["payment"]["id"] == payment["id"]


async def test_a_timeout_counts_as_a_failed_attempt(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    provider.script(Step(delay=0.8))  # past the 0.3 s timeout

    payment = (await initiate(paying, token, order_id)).ok()["initiatePayment"]

    assert len(provider.requests) == 2
    assert metric(paying, ATTEMPTS, outcome="timeout") == 1
    assert payment["status"] == "PENDING"


async def test_timeouts_and_dropped_connections_exhaust_the_attempts(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    provider.script(Step(drop=True), Step(delay=0.8), Step(drop=True))

    result = await initiate(paying, token, order_id)

    assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert len(provider.requests) == 3
    assert metric(paying, ATTEMPTS, outcome="timeout") == 1
    assert metric(paying, ATTEMPTS, outcome="connection_error") == 2
    assert [d.attempts for d in await _dead_letters(paying)] == [3]


async def test_a_client_error_is_not_retried(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    statuses = [400, 401, 404, 409, 422]

    for n, status in enumerate(statuses, start=1):
        provider.script(Step(status, {"error": "bad request"}))
        result = await initiate(paying, token, order_id)
        assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE", status
        assert len(provider.requests) == n, status  # one call each, no retry

    assert metric(paying, ATTEMPTS, outcome="rejected") == len(statuses)
    letters = await _dead_letters(paying)
    assert [(d.attempts, d.last_error) for d in letters] == [(1, f"HTTP {s}") for s in statuses]
    assert (await read_order(paying, token, order_id))["payment"] is None


async def test_an_unusable_answer_is_a_failure(
    paying: GraphQLClient, provider: ScriptedProvider
) -> None:
    token = await paying.signup("payer@example.com")
    order_id = await new_order(paying, token)
    bodies = [b"not json", {"no": "redirect"}, {"redirect_url": "javascript:alert(1)"}, ["x"]]

    for n, body in enumerate(bodies, start=1):
        provider.script(Step(200, body))
        result = await initiate(paying, token, order_id)
        assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE", body
        assert len(provider.requests) == n, body

    assert await _count(paying, Payment, order_id) == 0
    assert metric(paying, ATTEMPTS, outcome="invalid_response") == len(bodies)


async def test_an_unreachable_provider_is_tried_three_times(settings_factory: Any) -> None:
    with scripted_provider() as gone:
        url = gone.url
    settings = settings_factory(payment_provider_url=url, payment_retry_base_seconds=0.01)
    async with open_client(settings) as client:
        token = await client.signup("payer@example.com")
        order_id = await new_order(client, token)
        result = await initiate(client, token, order_id)
        assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE"
        assert metric(client, ATTEMPTS, outcome="connection_error") == 3
        assert [d.attempts for d in await _dead_letters(client)] == [3]


async def test_backoff_waits_stay_within_growing_bounds(
    settings_factory: Any, provider: ScriptedProvider
) -> None:
    base = 0.1
    settings = settings_factory(payment_provider_url=provider.url, payment_retry_base_seconds=base)
    async with open_client(settings) as client:
        token = await client.signup("payer@example.com")
        order_id = await new_order(client, token)
        provider.script(Step(500), Step(500), Step(500))
        assert (await initiate(client, token, order_id)).code == "PAYMENT_PROVIDER_UNAVAILABLE"
    first, second = provider.gaps
    # Full jitter: the n-th wait is uniform in [0, base * 2**(n-1)]. The slack covers the
    # request itself on a busy machine; it only ever lengthens a gap.
    slack = 0.2
    assert 0 <= first <= base + slack
    assert 0 <= second <= 2 * base + slack


async def test_each_wait_is_drawn_below_a_doubling_cap(provider: ScriptedProvider) -> None:
    base = 0.05
    rng = random.Random(20261126)
    caps: list[float] = []
    drawn: list[float] = []

    def jitter(cap: float) -> float:
        caps.append(cap)
        drawn.append(rng.uniform(0, cap))
        return drawn[-1]

    client = PaymentProviderClient(provider.url, timeout=1, retry_base=base, jitter=jitter)
    provider.script(Step(503), Step(503), Step(503))
    try:
        with pytest.raises(ProviderFailed) as failed:
            await client.create_payment(PaymentRequest("pay_x", 1, 1000, "http://l/cb"))
    finally:
        await client.aclose()
    assert failed.value.attempts == 3
    assert caps == [base, 2 * base]
    for gap, wait in zip(provider.gaps, drawn, strict=True):
        assert gap >= wait - 0.005  # never retried sooner than the drawn wait


async def test_waits_at_their_caps_grow(provider: ScriptedProvider) -> None:
    base = 0.05
    client = PaymentProviderClient(provider.url, timeout=1, retry_base=base, jitter=lambda cap: cap)
    provider.script(Step(500), Step(500), Step(500))
    try:
        with pytest.raises(ProviderFailed):
            await client.create_payment(PaymentRequest("pay_x", 1, 1000, "http://l/cb"))
    finally:
        await client.aclose()
    first, second = provider.gaps
    assert first >= base - 0.005
    assert second >= 2 * base - 0.005
    assert second > first


def test_full_jitter_is_uniform_below_the_cap() -> None:
    draws = [full_jitter(0.2) for _ in range(20_000)]
    assert all(0 <= d <= 0.2 for d in draws)
    assert statistics.mean(draws) == pytest.approx(0.1, abs=0.005)
    assert [backoff_cap(n, 0.2) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]


# --- who may pay, and when ------------------------------------------------------------


async def test_paying_needs_a_token(client: GraphQLClient, user_token: str) -> None:
    order_id = await new_order(client, user_token)
    assert (await initiate(client, None, order_id)).code == "UNAUTHENTICATED"
    assert (await initiate(client, "not-a-jwt", order_id)).code == "UNAUTHENTICATED"


async def test_another_users_order_is_not_found(client: GraphQLClient, user_token: str) -> None:
    order_id = await new_order(client, user_token)
    other = await client.signup("other@example.com")

    result = await initiate(client, other, order_id)
    missing = await initiate(client, other, "999999")
    garbage = await initiate(client, other, "not-an-id")

    assert result.code == missing.code == garbage.code == "NOT_FOUND"
    assert result.errors[0]["message"] == missing.errors[0]["message"]
    assert (await read_order(client, user_token, order_id))["payment"] is None


async def test_an_admin_may_pay_any_order(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order_id = await new_order(client, user_token)
    payment = (await initiate(client, admin_token, order_id)).ok()["initiatePayment"]
    assert payment["orderId"] == order_id
    assert (await read_order(client, user_token, order_id))["payment"]["id"] == payment["id"]


async def test_only_a_pending_order_can_be_paid(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    cases = [
        (["CANCELLED"], []),
        (["PAID"], ["SHIPPED", "CANCELLED"]),
        (["PAID", "SHIPPED"], ["DELIVERED"]),
        (["PAID", "SHIPPED", "DELIVERED"], []),
    ]
    for i, (moves, allowed) in enumerate(cases):
        order_id = await new_order(client, user_token, f"moved-{i}")
        for version, status in enumerate(moves, start=1):
            (await client.move(admin_token, order_id, status, version)).ok()

        result = await initiate(client, user_token, order_id)

        assert result.code == "INVALID_TRANSITION", moves
        assert result.ext["allowed"] == allowed, moves
        assert (await read_order(client, user_token, order_id))["payment"] is None


async def test_the_simulated_provider_points_at_this_service(
    client: GraphQLClient, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    payment = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    assert payment["redirectUrl"] == f"http://test/payments/simulator/{payment['id']}"
    assert metric(client, ATTEMPTS, outcome="simulated") == 1


async def test_public_url_wins_over_the_request_base(settings_factory: Any) -> None:
    settings = settings_factory(public_url="https://orders.example.com/")
    async with open_client(settings) as client:
        token = await client.signup("payer@example.com")
        order_id = await new_order(client, token)
        payment = (await initiate(client, token, order_id)).ok()["initiatePayment"]
    assert payment["redirectUrl"] == (
        f"https://orders.example.com/payments/simulator/{payment['id']}"
    )


async def test_racing_calls_on_the_simulated_provider_make_one_payment(
    client: GraphQLClient, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    results = await asyncio.gather(*(initiate(client, user_token, order_id) for _ in range(10)))
    assert len({r.ok()["initiatePayment"]["id"] for r in results}) == 1
    assert await _count(client, Payment, order_id) == 1
