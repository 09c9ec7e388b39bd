"""One traceback per outage, not one per request (issue 14, finding 7): while the database
fails, every client still gets its own requestId, and an operator can find each one in
the log, but the traceback is written once and the rest is counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from infra.logs import RepeatedFailures, failures
from tests.client import GraphQLClient
from webhooks import routes

N = 30


@pytest.fixture(autouse=True)
def fresh_throttle() -> Iterator[None]:
    failures.reset()
    yield
    failures.reset()


def _tracebacks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.exc_info]


async def test_a_database_outage_logs_one_traceback_and_every_request_id(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @contextlib.asynccontextmanager
    async def unreachable() -> AsyncIterator[Any]:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        yield  # pragma: no cover

    monkeypatch.setattr(client.app.state.services.db, "connect", unreachable)
    caplog.set_level(logging.INFO, logger="order_service")
    ids = [f"outage-{i}" for i in range(N)]
    answers = [
        await client.http.post(
            "/graphql", json={"query": "{ products { sku } }"}, headers={"X-Request-ID": rid}
        )
        for rid in ids
    ]

    for rid, answer in zip(ids, answers, strict=True):
        [error] = answer.json()["errors"]
        assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": rid}
    graphql = [r for r in caplog.records if r.name == "order_service.graphql"]
    [traceback] = _tracebacks(graphql)
    assert traceback.levelno == logging.ERROR and "outage-0" in traceback.getMessage()
    # Every request id is in a line of its own (one line each, no traceback).
    for rid in ids[1:]:
        [line] = [r for r in graphql if f"(request {rid})" in r.getMessage()]
        assert line.levelno == logging.INFO and not line.exc_info
        assert "ConnectionRefusedError again" in line.getMessage()
        assert "traceback logged with request outage-0" in line.getMessage()


async def test_failing_webhooks_log_one_traceback(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise ConnectionResetError("connection reset by the database")

    monkeypatch.setattr(routes, "process_delivery", broken)
    caplog.set_level(logging.INFO, logger="order_service.webhooks")
    for i in range(N):
        answer = await client.http.post(
            "/payments/webhook", content=b"{}", headers={"X-Request-ID": f"hook-{i}"}
        )
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal", "requestId": f"hook-{i}"}
    assert len(_tracebacks(caplog.records)) == 1
    assert all(any(f"hook-{i}" in r.getMessage() for r in caplog.records) for i in range(N))


# --- the throttle itself, on a clock of the test's own ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(where: int) -> BaseException:
    try:
        if where == 1:
            raise OSError("database unreachable")
        raise KeyError("missing")
    except BaseException as exc:
        return exc


def test_repeats_are_counted_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="throttle-test")
    logged = caplog.records
    log = logging.getLogger("throttle-test")
    clock = Clock()
    throttle = RepeatedFailures(interval=10, clock=clock)
    for i in range(25):  # one failure every second: one outage of 25 s
        throttle.report(log, "unexpected error", "orders", _fail(1), request_id=f"r{i}")
        clock.now += 1
    assert len(_tracebacks(logged)) == 1
    summaries = [r.getMessage() for r in logged if "repeated" in r.getMessage()]
    assert summaries == [
        "unexpected error: OSError repeated 10 times in the last 10 s (traceback logged with "
        "request r0; requests r1, r2, r3, r4, r5, ...)",
        "unexpected error: OSError repeated 10 times in the last 10 s (traceback logged with "
        "request r0; requests r11, r12, r13, r14, r15, ...)",
    ]
    assert all(r.levelno == logging.ERROR for r in logged if "repeated" in r.getMessage())
    # Another kind (type and place) has its own traceback.
    throttle.report(log, "unexpected error", "orders", _fail(2), request_id="k0")
    assert len(_tracebacks(logged)) == 2

    # Quiet for an interval: the outage is over. The next one starts with what the last
    # left uncounted (r21..r24), then a traceback of its own.
    clock.now += 30
    throttle.report(log, "unexpected error", "orders", _fail(1), request_id="again")
    assert "repeated 4 times" in logged[-2].getMessage()
    assert logged[-1].exc_info and "(request again)" in logged[-1].getMessage()


async def test_the_last_repeats_are_summed_up_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="throttle-test")
    logged = caplog.records
    log = logging.getLogger("throttle-test")
    throttle = RepeatedFailures(interval=0.2)
    for i in range(4):
        throttle.report(
            log, "webhook failed", "POST /payments/webhook", _fail(1), request_id=str(i)
        )
    # No more failures come: a timer on the event loop writes the count.
    deadline = time.monotonic() + 30
    while not any("repeated" in r.getMessage() for r in logged):
        assert time.monotonic() < deadline, "no summary was written"
        await asyncio.sleep(0.05)
    [summary] = [r.getMessage() for r in logged if "repeated" in r.getMessage()]
    assert summary.startswith("webhook failed: OSError repeated 3 times")
    assert len(_tracebacks(logged)) == 1


def test_what_is_still_uncounted_is_written_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="throttle-test")
    log = logging.getLogger("throttle-test")
    throttle = RepeatedFailures(interval=10, clock=Clock())
    for i in range(3):
        throttle.report(log, "unexpected error", "me", _fail(1), request_id=f"s{i}")
    throttle.flush()
    throttle.flush()  # nothing new: nothing written
    summaries = [r.getMessage() for r in caplog.records if "repeated" in r.getMessage()]
    assert summaries == [
        "unexpected error: OSError repeated 2 times in the last 0 s (traceback logged with "
        "request s0; requests s1, s2)"
    ]
