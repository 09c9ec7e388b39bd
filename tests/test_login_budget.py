"""Failed-login budgets are reserved before the password is checked (issue 14, finding 3):
racing guesses get at most the budget of password checks, on the in-process limiter and
on Redis alike; and password hashing is bounded per instance, refusing fast beyond it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import bcrypt
import pytest
from redis.asyncio import Redis

from infra.limiter import InProcessLimiter, Limiter, RedisLimiter
from infra.security import HashingPool, PasswordHashingBusy
from resolvers import accounts
from tests.client import PASSWORD, GraphQLClient, Result
from tests.ops_support import metric_now, running, shared_redis

# A small budget refills slowly (one unit per 15 s): a burst on a loaded machine is over
# long before a unit comes back.
BUDGET = 4
LOGIN = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }"
SIGNUP = "mutation($i: SignupInput!) { signup(input: $i) { accessToken } }"


@pytest.fixture(params=["in-process", "redis"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The limiter's backend: none (in-process), or Redis (the run's, or a private one)."""
    if request.param == "in-process":
        yield None
        return
    with shared_redis() as url:
        yield url


async def login(client: GraphQLClient, email: str, password: str, ip: str) -> Result:
    # The test transport's peer is 127.0.0.1, a trusted proxy: X-Forwarded-For counts.
    return await client.execute(
        LOGIN, {"i": {"email": email, "password": password}}, headers={"X-Forwarded-For": ip}
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    """Waits for `condition` (a state, not a duration: the deadline is only a safety net)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


class HeldChecks:
    """Stands in for the password checks of `resolvers.accounts`: records each one and
    holds it until `open()`, so that a whole burst is in flight at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.checked: list[str] = []
        self.gate = asyncio.Event()
        real_verify, real_burn = accounts.verify_password, accounts.burn_password_check

        async def verify(password: str, password_hash: str) -> bool:
            self.checked.append(password)
            await self.gate.wait()
            return await real_verify(password, password_hash)

        async def burn(password: str, *, rounds: int) -> None:
            self.checked.append(password)
            await self.gate.wait()
            await real_burn(password, rounds=rounds)

        monkeypatch.setattr(accounts, "verify_password", verify)
        monkeypatch.setattr(accounts, "burn_password_check", burn)

    def open(self) -> None:
        self.gate.set()


async def _burst_then_the_right_password(
    client: GraphQLClient,
    checks: HeldChecks,
    guesses: list[tuple[str, str]],
    right: tuple[str, str],
) -> tuple[Counter[str | None], Result]:
    """Sends every (email, ip) guess at once with a wrong password; once each is either
    answered or held in its password check, sends the right password; then lets the held
    checks finish."""
    tasks = [
        asyncio.create_task(login(client, email, f"wrong-guess-{n}", ip))
        for n, (email, ip) in enumerate(guesses)
    ]
    try:
        await until(
            lambda: len(checks.checked) + sum(t.done() for t in tasks) == len(tasks),
            "every guess answered or being checked",
        )
        late = asyncio.create_task(login(client, right[0], PASSWORD, right[1]))
        await until(
            lambda: late.done() or len(checks.checked) > len(tasks), "the right password answered"
        )
    finally:
        checks.open()
    answers = await asyncio.gather(*tasks)
    return Counter(a.code for a in answers), await late


async def test_racing_guesses_for_one_email_get_only_the_budget_of_checks(
    settings_factory: Any, redis_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory(
        redis_url=redis_url,
        rate_limit_login_failures_per_minute=BUDGET,
        password_hash_concurrency=40,  # the hashing bound is not what this test is about
    )
    async with running(settings) as client:
        await client.signup("victim@example.com")
        checks = HeldChecks(monkeypatch)
        # 40 addresses: only the email's budget is drawn on.
        guesses = [("victim@example.com", f"198.51.100.{i}") for i in range(40)]
        codes, late = await _burst_then_the_right_password(
            client, checks, guesses, ("victim@example.com", "192.0.2.200")
        )
        assert codes == {"INVALID_CREDENTIALS": BUDGET, "RATE_LIMITED": 40 - BUDGET}
        assert len(checks.checked) == BUDGET
        # Sent inside the burst, after the budget was gone: refused unchecked, no token.
        assert late.code == "RATE_LIMITED", late.body
        assert late.ext["retryAfter"] > 0
        assert PASSWORD not in checks.checked
        assert (
            await metric_now(client, "rate_limited_total", limit="login_email") == 40 - BUDGET + 1
        )


async def test_racing_guesses_from_one_address_get_only_the_budget_of_checks(
    settings_factory: Any, redis_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory(
        redis_url=redis_url,
        rate_limit_login_failures_per_minute=BUDGET,
        password_hash_concurrency=40,  # the hashing bound is not what this test is about
    )
    async with running(settings) as client:
        await client.signup("someone@example.com")
        checks = HeldChecks(monkeypatch)
        # 40 emails (unknown ones: their check is against a dummy hash), one address.
        guesses = [(f"nobody{i}@example.com", "198.51.100.7") for i in range(40)]
        codes, late = await _burst_then_the_right_password(
            client, checks, guesses, ("someone@example.com", "198.51.100.7")
        )
        assert codes == {"INVALID_CREDENTIALS": BUDGET, "RATE_LIMITED": 40 - BUDGET}
        assert len(checks.checked) == BUDGET
        assert late.code == "RATE_LIMITED", late.body
        assert await metric_now(client, "rate_limited_total", limit="login_ip") == 40 - BUDGET + 1
        # The same person from another address is not held up by that address.
        assert (await login(client, "someone@example.com", PASSWORD, "198.51.100.8")).ok()


async def test_a_successful_login_gives_its_reservation_back(
    settings_factory: Any, redis_url: str | None
) -> None:
    settings = settings_factory(redis_url=redis_url, rate_limit_login_failures_per_minute=3)
    async with running(settings) as client:
        await client.signup("regular@example.com")
        ip = "203.0.113.5"
        for _ in range(2):
            assert (await login(client, "regular@example.com", "not-it-at-all", ip)).code == (
                "INVALID_CREDENTIALS"
            )
        # Each success reserved a unit of both budgets and gave it back.
        for _ in range(6):
            assert (await login(client, "regular@example.com", PASSWORD, ip)).ok()
        # Concurrent successes too: with one unit left, they take turns, never refused
        # for more than the budget allows.
        answers = await asyncio.gather(
            *(login(client, "regular@example.com", PASSWORD, ip) for _ in range(3))
        )
        assert sum(a.code is None for a in answers) >= 1
        assert all(a.code in (None, "RATE_LIMITED") for a in answers)
        # The third failure still fits in the budget; then it is spent.
        wrong = await login(client, "regular@example.com", "not-it-at-all", ip)
        assert wrong.code == "INVALID_CREDENTIALS"
        assert (await login(client, "regular@example.com", PASSWORD, ip)).code == "RATE_LIMITED"


# --- the limiters themselves ------------------------------------------------------------


@pytest.fixture
async def limiter(redis_url: str | None) -> AsyncIterator[Limiter]:
    if redis_url is None:
        yield InProcessLimiter()
        return
    client = Redis.from_url(redis_url)
    try:
        yield RedisLimiter(client, prefix=f"test-{uuid.uuid4().hex[:12]}:")
    finally:
        await client.aclose()


async def test_a_reservation_takes_all_of_its_keys_or_none(limiter: Limiter) -> None:
    for _ in range(3):
        assert await limiter.reserve(["email:a", "ip:1"], 3) is None
    # ip:1 is spent; a reservation that also needs ip:1 takes nothing from email:b.
    refused = await limiter.reserve(["email:b", "ip:1"], 3)
    assert refused is not None and refused.key == "ip:1" and refused.retry_after >= 1
    for _ in range(3):
        assert await limiter.reserve(["email:b"], 3) is None
    assert (await limiter.reserve(["email:b"], 3)) is not None
    # The first refusing key in order is the one named.
    refused = await limiter.reserve(["email:a", "ip:1"], 3)
    assert refused is not None and refused.key == "email:a"


async def test_a_released_unit_can_be_reserved_again(limiter: Limiter) -> None:
    for _ in range(2):
        assert await limiter.reserve(["k1", "k2"], 2) is None
    assert await limiter.reserve(["k1"], 2) is not None
    await limiter.release(["k1", "k2"], 2)
    assert await limiter.reserve(["k1", "k2"], 2) is None
    assert await limiter.reserve(["k1"], 2) is not None
    # A give-back never makes more than the budget: releasing an untouched key is a no-op.
    await limiter.release(["fresh"], 2)
    await limiter.release(["fresh"], 2)
    assert await limiter.reserve(["fresh"], 2) is None
    assert await limiter.reserve(["fresh"], 2) is None
    assert await limiter.reserve(["fresh"], 2) is not None
    # 0 is off.
    assert await limiter.reserve(["k1"], 0) is None


async def test_reservations_racing_on_one_key_get_exactly_the_budget(limiter: Limiter) -> None:
    answers = await asyncio.gather(*(limiter.reserve(["race", f"ip:{i}"], 10) for i in range(40)))
    assert sum(a is None for a in answers) == 10


# --- password hashing is bounded per instance -------------------------------------------


class BlockedBcrypt:
    """bcrypt.checkpw held in its thread until `release()`: counts the checks under way."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = 0
        self.gate = threading.Event()
        real = bcrypt.checkpw

        def checkpw(password: bytes, hashed: bytes) -> bool:
            self.entered += 1
            self.gate.wait(60)
            return real(password, hashed)

        monkeypatch.setattr(bcrypt, "checkpw", checkpw)

    def release(self) -> None:
        self.gate.set()


async def test_password_checks_beyond_the_cores_are_refused_fast(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One hash at a time, one more waiting: the rest is refused at once.
    async with running(settings_factory(password_hash_concurrency=1)) as client:
        emails = [f"user{i}@example.com" for i in range(5)]
        for email in emails:
            await client.signup(email)
        blocked = BlockedBcrypt(monkeypatch)
        tasks = [
            asyncio.create_task(login(client, email, PASSWORD, f"198.51.100.{i}"))
            for i, email in enumerate(emails)
        ]
        try:
            await until(
                lambda: (
                    (sum(t.done() for t in tasks) == 3 and blocked.entered == 1)
                    or blocked.entered == len(tasks)
                ),
                "the logins beyond the pool refused, or all of them checking",
            )
            refused = [t.result() for t in tasks if t.done()]
            assert blocked.entered == 1
            assert [r.code for r in refused] == ["RATE_LIMITED"] * 3
            assert all(r.ext["retryAfter"] == 1 for r in refused)
            # A signup needs a hash too: refused the same way while the pool is full.
            signup = await client.execute(
                SIGNUP, {"i": {"email": "new@example.com", "password": PASSWORD}}
            )
            assert signup.code == "RATE_LIMITED", signup.body
        finally:
            blocked.release()
        answered = await asyncio.gather(*tasks)
        assert sum(a.code is None for a in answered) == 2
        assert await metric_now(client, "rate_limited_total", limit="password_hashing") == 4
        # A refusal for a busy server is no failed login: the budgets were given back.
        for i, email in enumerate(emails):
            assert (await login(client, email, PASSWORD, f"198.51.100.{i}")).ok()
        await client.signup("new@example.com")


async def test_a_cancelled_check_holds_its_slot_until_the_hash_ends() -> None:
    pool = HashingPool(1, waiting=0)
    gate = threading.Event()
    try:
        running_hash = asyncio.create_task(pool.run(gate.wait, 60))
        await until(lambda: pool.admitted == 1, "the hash started")
        running_hash.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running_hash
        # The thread still hashes: its slot is not free for another request yet.
        with pytest.raises(PasswordHashingBusy):
            await pool.run(time.sleep, 0)
    finally:
        gate.set()
    await until(lambda: pool.admitted == 0, "the slot freed once the hash ended")
    assert await pool.run(sum, [1, 2]) == 3
    pool.shutdown()
