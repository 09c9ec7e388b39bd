"""The payment provider's HTTP client: one shared httpx client, bounded retries with
exponential backoff and full jitter.

Only failures that another try may cure are retried (no connection, a timeout, 429, 5xx);
any other answer fails at once.

Calls leave each instance at no more than PAYMENT_PROVIDER_MAX_RATE a second (aiolimiter's
leaky bucket, retries and refunds included): a burst of initiatePayment waits its turn
here rather than tripping the provider's own rate limit, which answers 429 to every
instance at once. A call that cannot get a turn within the provider timeout counts as a
retryable failure ("throttled"), so a request never waits unboundedly behind the queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from aiolimiter import AsyncLimiter

from infra import tracing
from infra.settings import Settings

log = logging.getLogger("order_service.provider")
T = TypeVar("T")

MAX_ATTEMPTS = 3
MAX_REDIRECT_URL = 2048
MAX_REFERENCE = 200


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    payment_id: str
    order_id: int
    amount_cents: int
    callback_url: str
    currency: str = "USD"

    def as_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "order_id": self.order_id,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "callback_url": self.callback_url,
        }


@dataclass(frozen=True, slots=True)
class RefundRequest:
    payment_id: str
    provider_reference: str | None
    amount_cents: int
    currency: str = "USD"

    def as_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "provider_reference": self.provider_reference,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
        }


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    """What the provider answered: where to send the payer, and its own reference."""

    redirect_url: str
    reference: str | None = None


class ProviderFailed(Exception):
    """The provider did not accept the payment; `attempts` calls were made."""

    def __init__(self, last_error: str, attempts: int) -> None:
        super().__init__(last_error)
        self.last_error = last_error
        self.attempts = attempts


class _Retryable(Exception):
    def __init__(self, outcome: str, error: str) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error


class _Final(Exception):
    def __init__(self, outcome: str, error: str) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error


def full_jitter(cap: float) -> float:
    return random.uniform(0, cap)


def backoff_cap(retry: int, base: float) -> float:
    """The longest wait before retry number `retry` (1, 2, ...): base, 2 base, 4 base..."""
    return float(base * 2 ** (retry - 1))


class PaymentProviderClient:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retry_base: float,
        max_attempts: int = MAX_ATTEMPTS,
        on_attempt: Callable[[str], None] | None = None,
        jitter: Callable[[float], float] = full_jitter,
        transport: httpx.AsyncBaseTransport | None = None,
        max_rate: float = 0,
    ) -> None:
        self.url = url
        # Calls a second to the provider from this instance; 0: no limit.
        self.max_rate = max_rate
        self._limiter = AsyncLimiter(max_rate, 1) if max_rate > 0 else None
        self.timeout = timeout
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self._on_attempt = on_attempt or (lambda _outcome: None)
        self._jitter = jitter
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            headers={"user-agent": "order-service"},
        )
        # With tracing on: a span per call, and `traceparent` sent on to the provider.
        tracing.instrument_httpx(self._http)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_attempt: Callable[[str], None] | None = None
    ) -> PaymentProviderClient | None:
        """The configured provider, or None for the built-in simulated one."""
        if not settings.payment_provider_url:
            return None
        return cls(
            settings.payment_provider_url,
            timeout=settings.payment_provider_timeout_seconds,
            retry_base=settings.payment_retry_base_seconds,
            on_attempt=on_attempt,
            max_rate=settings.payment_provider_max_rate,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def refunds_url(self) -> str:
        return self.url.rstrip("/") + "/refunds"

    async def create_payment(self, request: PaymentRequest) -> ProviderPayment:
        """Ask the provider to start a payment; raises ProviderFailed after the last try."""
        response = await self._with_retries(
            self.url,
            request.as_json(),
            # A retry after a lost answer must not start a second payment there.
            idempotency_key=request.payment_id,
            what=request.payment_id,
            on_attempt=self._on_attempt,
            parse=_parse_answer,
        )
        return response

    async def refund(self, request: RefundRequest) -> None:
        """Ask the provider to refund a payment (`POST {url}/refunds`); any 2xx is done.
        Same retries and backoff as payments; raises ProviderFailed after the last try.
        Refund attempts are not counted as payment attempts."""
        await self._with_retries(
            self.refunds_url,
            request.as_json(),
            # However often a refund is asked for (a retry, a claim taken over after a
            # crash), the provider refunds once.
            idempotency_key=f"refund-{request.payment_id}",
            what=f"the refund of {request.payment_id}",
            on_attempt=lambda _outcome: None,
            parse=lambda _response: None,
        )

    async def _with_retries(
        self,
        url: str,
        body: dict[str, Any],
        *,
        idempotency_key: str,
        what: str,
        on_attempt: Callable[[str], None],
        parse: Callable[[httpx.Response], T],
    ) -> T:
        last_error = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self._jitter(backoff_cap(attempt - 1, self.retry_base)))
            try:
                answer = parse(await self._attempt(url, body, idempotency_key))
            except _Retryable as exc:
                on_attempt(exc.outcome)
                last_error = exc.error
                log.info(
                    "payment provider attempt %d/%d for %s failed: %s",
                    attempt,
                    self.max_attempts,
                    what,
                    exc.error,
                )
                continue
            except _Final as exc:
                on_attempt(exc.outcome)
                raise ProviderFailed(exc.error, attempt) from None
            on_attempt("success")
            return answer
        raise ProviderFailed(last_error, self.max_attempts)

    async def _attempt(
        self, url: str, body: dict[str, Any], idempotency_key: str
    ) -> httpx.Response:
        if self._limiter is not None:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._limiter.acquire()
            except TimeoutError:
                raise _Retryable(
                    "throttled",
                    f"no turn within {self.timeout:g} s under PAYMENT_PROVIDER_MAX_RATE="
                    f"{self.max_rate:g}",
                ) from None
        try:
            response = await self._http.post(
                url, json=body, headers={"idempotency-key": idempotency_key}
            )
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(
                "connection_error", f"connection error ({type(exc).__name__})"
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable("retryable_status", f"HTTP {status}")
        if not 200 <= status < 300:
            raise _Final("rejected", f"HTTP {status}")
        return response


def _parse_answer(response: httpx.Response) -> ProviderPayment:
    try:
        data = response.json()
    except ValueError:
        raise _Final("invalid_response", "HTTP 2xx without a JSON body") from None
    redirect = data.get("redirect_url") if isinstance(data, dict) else None
    if not isinstance(redirect, str) or not _is_web_url(redirect):
        raise _Final("invalid_response", "HTTP 2xx without a valid redirect_url")
    reference = data.get("reference", data.get("provider_reference"))
    if reference is not None and not isinstance(reference, str | int):
        reference = None
    ref = str(reference)[:MAX_REFERENCE] if reference is not None else None
    return ProviderPayment(redirect_url=redirect, reference=ref)


def _is_web_url(url: str) -> bool:
    # The URL is handed to browsers: nothing but http(s) with a host.
    if len(url) > MAX_REDIRECT_URL:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
