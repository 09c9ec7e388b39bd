"""Rate limits: orders per user, failed logins per email and per client address."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from resolvers import accounts
from tests.client import PASSWORD, GraphQLClient
from tests.ops_support import metric_now, new_order, running, shared_redis


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_redis() as url:
        yield url


def _from(ip: str) -> dict[str, str]:
    # The test transport's peer is 127.0.0.1, a trusted proxy: X-Forwarded-For counts.
    return {"X-Forwarded-For": ip}


async def login(
    client: GraphQLClient, email: str, password: str = PASSWORD, ip: str = "203.0.113.1"
) -> Any:
    return await client.execute(
        "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
        {"i": {"email": email, "password": password}},
        headers=_from(ip),
    )


async def test_eleventh_order_in_a_minute_is_limited_while_others_go_on(
    client: GraphQLClient, user_token: str
) -> None:
    for i in range(10):
        await new_order(client, user_token, f"t{i}")
    refused = await client.create_order(user_token, "t10")
    assert refused.code == "RATE_LIMITED"
    assert isinstance(refused.ext["retryAfter"], int) and refused.ext["retryAfter"] > 0
    assert refused.data is None

    other = await client.signup("other@example.com")
    assert (await client.create_order(other, "t0")).ok()
    assert await metric_now(client, "rate_limited_total", limit="create_order") == 1


async def test_an_idempotent_repeat_spends_no_budget(
    client: GraphQLClient, user_token: str
) -> None:
    first = await new_order(client, user_token, "same")
    for _ in range(15):
        assert (await new_order(client, user_token, "same"))["id"] == first["id"]
    for i in range(9):
        await new_order(client, user_token, f"n{i}")
    assert (await client.create_order(user_token, "n9")).code == "RATE_LIMITED"
    # Over the limit, a repeat still answers with the original order.
    assert (await new_order(client, user_token, "same"))["id"] == first["id"]
    assert await metric_now(client, "orders_created_total") == 10


async def test_zero_turns_the_order_limit_off(settings_factory: Any) -> None:
    async with running(settings_factory(rate_limit_orders_per_minute=0)) as client:
        token = await client.signup("busy@example.com")
        for i in range(15):
            await new_order(client, token, f"t{i}")


async def test_failed_logins_are_limited_per_email(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.signup("victim@example.com")
    await client.signup("bystander@example.com")
    for i in range(10):
        result = await login(client, "victim@example.com", "wrong-password", ip=f"198.51.100.{i}")
        assert result.code == "INVALID_CREDENTIALS"

    checked: list[str] = []
    real_verify = accounts.verify_password

    async def spy(password: str, password_hash: str) -> bool:
        checked.append(password)
        return await real_verify(password, password_hash)

    monkeypatch.setattr(accounts, "verify_password", spy)
    # Even the right password from a fresh address: refused without looking at it.
    refused = await login(client, "VICTIM@example.com", ip="192.0.2.99")
    assert refused.code == "RATE_LIMITED"
    assert refused.ext["retryAfter"] > 0
    assert checked == []
    assert (await login(client, "bystander@example.com", ip="192.0.2.99")).ok()
    assert await metric_now(client, "rate_limited_total", limit="login_email") == 1


async def test_failed_logins_are_limited_per_client_address(client: GraphQLClient) -> None:
    await client.signup("someone@example.com")
    for i in range(10):
        result = await login(client, f"nobody{i}@example.com", "guess-guess", ip="198.51.100.7")
        assert result.code == "INVALID_CREDENTIALS"
    refused = await login(client, "someone@example.com", ip="198.51.100.7")
    assert refused.code == "RATE_LIMITED"
    assert refused.ext["retryAfter"] > 0
    assert (await login(client, "someone@example.com", ip="198.51.100.8")).ok()
    assert await metric_now(client, "rate_limited_total", limit="login_ip") == 1


async def test_successful_logins_spend_nothing(client: GraphQLClient) -> None:
    await client.signup("regular@example.com")
    for _ in range(15):
        assert (await login(client, "regular@example.com")).ok()


async def test_two_instances_on_redis_share_the_limits(
    settings_factory: Any, redis_url: str
) -> None:
    settings = settings_factory(redis_url=redis_url, rate_limit_login_failures_per_minute=4)
    async with running(settings) as one, running(settings) as two:
        token = await one.signup("shared@example.com")
        for i in range(10):
            await new_order(one if i % 2 else two, token, f"t{i}")
        assert (await one.create_order(token, "t10")).code == "RATE_LIMITED"
        assert (await two.create_order(token, "t11")).code == "RATE_LIMITED"

        for i in range(4):
            failed = await login(one if i % 2 else two, "shared@example.com", "nope-nope-nope")
            assert failed.code == "INVALID_CREDENTIALS"
        assert (await login(one, "shared@example.com", ip="192.0.2.1")).code == "RATE_LIMITED"
        assert (await login(two, "shared@example.com", ip="192.0.2.2")).code == "RATE_LIMITED"
