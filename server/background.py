"""The app's background loops: the outbox relay and the Redis watch."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from infra import tracing
from resolvers import events
from resolvers.context import Services

log = logging.getLogger("order_service")

RELAY_INTERVAL_SECONDS = 1.0
RELAY_MIN_AGE = timedelta(seconds=2)
REDIS_WATCH_INTERVAL_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 3.0


async def relay_forever(services: Services) -> None:
    """Republishes what a failed publish left in the outbox, once a second."""
    passes = 0
    failing_since: int | None = None
    while True:
        await asyncio.sleep(RELAY_INTERVAL_SECONDS)
        passes += 1
        try:
            # Its polling makes no trace; what it publishes does (events.publish).
            with tracing.quiet():
                await events.relay_once(services, min_age=RELAY_MIN_AGE)
        except Exception as exc:
            # One traceback per outage, not one a second for as long as it lasts.
            if failing_since is None:
                failing_since = passes
                log.warning("outbox relay pass failed; retrying every second", exc_info=True)
            else:
                log.debug("outbox relay pass failed again: %s", type(exc).__name__)
        else:
            if failing_since is not None:
                log.info("outbox relay recovered after %d failed passes", passes - failing_since)
                failing_since = None


async def redis_components(services: Services) -> dict[str, bool]:
    """Whether the Redis-backed cache and rate limits answer (in-process ones always do):
    what /ready reports and what the watch loop exports as `redis_up{component}`."""
    states: dict[str, bool] = {}
    for component, check in (
        ("cache", services.cache.healthy),
        ("rate_limits", services.limiter.healthy),
    ):
        try:
            with tracing.quiet():
                states[component] = await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
        except Exception:
            states[component] = False
    return states


async def watch_redis(services: Services) -> None:
    """Notices a Redis outage without waiting for traffic, and its end: the cache moves to
    a new epoch as soon as Redis is back, before any instance can serve a stale entry."""
    while True:
        await asyncio.sleep(REDIS_WATCH_INTERVAL_SECONDS)
        for component, up in (await redis_components(services)).items():
            services.metrics.redis_up.labels(component).set(1 if up else 0)
