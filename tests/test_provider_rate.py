"""Calls to the payment provider leave an instance at no more than
PAYMENT_PROVIDER_MAX_RATE a second (aiolimiter); a call that gets no turn within the
provider timeout is a retryable "throttled" attempt."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from infra.provider import PaymentProviderClient, PaymentRequest, ProviderFailed
from infra.settings import load_settings

OK = {"redirect_url": "https://pay.example.com/p", "reference": "r"}


class Recorder:
    """A provider that answers 200 and notes when each call arrived (the loop's clock)."""

    def __init__(self, hold_until: int = 0) -> None:
        self.arrivals: list[float] = []
        self._hold_until = hold_until
        self._all_in = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrivals.append(asyncio.get_running_loop().time())
        if self._hold_until:
            # Answer nobody until `hold_until` calls are in flight at once.
            if len(self.arrivals) >= self._hold_until:
                self._all_in.set()
            await asyncio.wait_for(self._all_in.wait(), 10)
        return httpx.Response(200, json=OK)


def client_for(
    recorder: Recorder, *, max_rate: float, timeout: float = 10, **kw: object
) -> PaymentProviderClient:
    return PaymentProviderClient(
        "https://provider.test/pay",
        timeout=timeout,
        retry_base=0,
        transport=httpx.MockTransport(recorder),
        max_rate=max_rate,
        **kw,  # type: ignore[arg-type]
    )


def pay(n: int) -> PaymentRequest:
    return PaymentRequest(f"pay_{n}", n, 1000, "https://shop.test/cb")


async def test_a_burst_leaves_at_the_configured_rate() -> None:
    recorder = Recorder()
    client = client_for(recorder, max_rate=4)
    try:
        answers = await asyncio.gather(*(client.create_payment(pay(n)) for n in range(12)))
    finally:
        await client.aclose()
    assert all(a.reference == "r" for a in answers)  # every payment went through
    first = recorder.arrivals[0]
    # A leaky bucket of 4 a second: 4 at once, then one every 0.25 s. A slow machine only
    # spreads the calls further, so the bound holds however busy it is.
    assert sum(1 for t in recorder.arrivals if t - first < 0.5) <= 6
    assert recorder.arrivals[-1] - first >= 1.5


async def test_without_a_rate_every_call_goes_at_once() -> None:
    # All 12 calls must be in flight together for any of them to be answered.
    recorder = Recorder(hold_until=12)
    client = client_for(recorder, max_rate=0)
    try:
        answers = await asyncio.gather(*(client.create_payment(pay(n)) for n in range(12)))
    finally:
        await client.aclose()
    assert len(answers) == 12 and len(recorder.arrivals) == 12


async def test_a_call_without_a_turn_in_time_is_a_throttled_attempt() -> None:
    recorder = Recorder()
    outcomes: list[str] = []
    client = client_for(
        recorder, max_rate=1, timeout=0.2, max_attempts=1, on_attempt=outcomes.append
    )
    try:
        results = await asyncio.gather(
            *(client.create_payment(pay(n)) for n in range(3)), return_exceptions=True
        )
    finally:
        await client.aclose()
    failed = [r for r in results if isinstance(r, ProviderFailed)]
    assert len(recorder.arrivals) == 1  # only the first call reached the provider
    assert len(failed) == 2
    assert all("PAYMENT_PROVIDER_MAX_RATE=1" in f.last_error for f in failed)
    assert sorted(outcomes) == ["success", "throttled", "throttled"]


async def test_the_rate_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().payment_provider_max_rate == 50
    monkeypatch.setenv("PAYMENT_PROVIDER_MAX_RATE", "7.5")
    settings = load_settings(payment_provider_url="https://provider.test/pay")
    client = PaymentProviderClient.from_settings(settings)
    assert client is not None
    await client.aclose()
    assert client.max_rate == 7.5
