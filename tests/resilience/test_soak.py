"""Soak: mixed traffic at a fixed rate for a minute with 500 subscribers on both websocket
protocols. No errors beyond the rate limiter, every event delivered to every subscriber
allowed to see it, and the server's memory (RSS, sampled every second) not growing."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import psutil
import pytest

from tests.resilience.harness import (
    Api,
    healthy,
    log_mark,
    pg_database,
    serve,
    server_env,
    unexpected_errors,
)
from tests.resilience.ledger import Scenario
from tests.resilience.load import Feeds, committed_changes, eventually, wait_subscribers
from tests.resilience.traffic import Traffic

pytestmark = pytest.mark.timeout(300)

SECONDS = float(os.environ.get("RESILIENCE_SOAK_SECONDS", "60"))
RATE = 20.0  # operations a second: new orders, admin moves, webhook payments, reads
USERS, ADMINS, CONNECTIONS_EACH = 45, 5, 10  # 500 subscribers
# RSS after warm-up against RSS at the end: more than this is growth, not noise.
MAX_GROWTH_MB = 24.0


async def test_soak_with_500_subscribers(tmp_path: Path, scenario: Scenario) -> None:
    """Soak: mixed traffic at a fixed rate with 500 subscribers"""
    with pg_database() as database_url:
        # The default limits: the order limit is part of what is soaked.
        env = server_env(database_url, ws_max_connections_per_user=CONNECTIONS_EACH)
        with serve(env, tmp_path) as server:
            mark = log_mark(server)
            process = psutil.Process(server.process.pid)
            async with Api.open(server.url, scenario, timeout=30, connections=64) as api:
                tokens, ids = [], []
                for n in range(USERS):
                    token, user_id = await api.signup(f"soak-{n}@example.com")
                    tokens.append(token)
                    ids.append(user_id)
                admins = [
                    (await api.admin(database_url, f"soak-admin-{n}@example.com"))[0]
                    for n in range(ADMINS)
                ]
                subscribers: list[tuple[int | None, str]] = [
                    (ids[n], tokens[n]) for n in range(USERS) for _ in range(CONNECTIONS_EACH)
                ] + [(None, admins[n]) for n in range(ADMINS) for _ in range(CONNECTIONS_EACH)]
                opened = time.monotonic()
                feeds = await Feeds.open(server.ws_url, subscribers, scenario)
                await wait_subscribers(api, len(subscribers), timeout=60)
                scenario.note(
                    f"{len(subscribers)} subscribers connected in {time.monotonic() - opened:.1f} s"
                )
                traffic = Traffic(api, tokens, ids, admins[0])
                samples: list[tuple[float, float]] = []

                async def sample_rss() -> None:
                    started = time.monotonic()
                    while time.monotonic() - started < SECONDS:
                        samples.append(
                            (time.monotonic() - started, process.memory_info().rss / 2**20)
                        )
                        await asyncio.sleep(1)

                started = time.monotonic()
                await asyncio.gather(
                    traffic.run(seconds=SECONDS, rate=RATE, workers=16), sample_rss()
                )
                ran = time.monotonic() - started
                expected = await committed_changes(database_url)

                async def all_delivered() -> bool:
                    return feeds.missing(expected)["missing"] == 0

                delivered = await eventually(all_delivered, 30)
                await asyncio.sleep(1)
                tally = feeds.missing(expected)
                missing = feeds.missing_events(expected)
                await feeds.close()
            assert healthy(server.url)
            surprises = unexpected_errors(server, mark)

    warm = [rss for t, rss in samples if SECONDS * 0.25 <= t < SECONDS * 0.45]
    end = [rss for t, rss in samples if t >= SECONDS * 0.8]
    growth = statistics.median(end) - statistics.median(warm)
    answers = ", ".join(f"{k} x{n}" for k, n in traffic.answers.most_common())
    scenario.note(
        f"{ran:.0f} s at {RATE:.0f} operations/s: {len(traffic.orders)} orders, "
        f"{traffic.moves} admin moves, {traffic.paid} webhook payments, "
        f"{traffic.reads} reads; answers: {answers}"
    )
    scenario.note(
        f"server RSS: {samples[0][1]:.0f} MB at the start, {statistics.median(warm):.0f} MB "
        f"after warm-up, {statistics.median(end):.0f} MB at the end "
        f"(growth {growth:+.1f} MB, limit {MAX_GROWTH_MB:.0f} MB)"
    )
    if SECONDS < 60:
        scenario.note(f"shortened to {SECONDS:.0f} s (RESILIENCE_SOAK_SECONDS) for the CI budget")
    scenario.check("events delivered to the subscribers allowed to see them", tally["delivered"])
    scenario.lose("events not delivered to a subscriber", tally["missing"])
    scenario.lose("events delivered twice", tally["duplicates"])
    scenario.check(
        "reads never older than what the reader was told", traffic.reads - traffic.stale_reads
    )
    scenario.lose("stale reads (older than an acknowledged write)", traffic.stale_reads)
    assert not traffic.wrong, traffic.wrong[:10]
    assert traffic.failures == 0, f"errors beyond the rate limiter: {traffic.answers}"
    assert delivered and tally["missing"] == 0, f"events missing: {tally} {missing}"
    assert tally["unexpected"] == tally["duplicates"] == tally["errors"] == tally["closed"] == 0, (
        tally
    )
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.1f} MB: {samples}"
    assert not surprises, surprises[:10]
