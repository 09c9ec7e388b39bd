"""Prometheus metrics, in a registry of the app's own so that tests can build many apps.

With several worker processes (`serve --workers N`) each worker counts on its own. Either
scrape every instance (one worker per container, the compose and k8s setup), or set
PROMETHEUS_MULTIPROC_DIR (an empty directory, the same for all workers, set before they
start): then every worker writes its samples there and /metrics adds them all up.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.orders_created = Counter(
            "orders_created_total", "New orders (an idempotent repeat is not counted).", registry=r
        )
        self.graphql_operations = Counter(
            "graphql_operations_total",
            "GraphQL operations by name, type and outcome.",
            ["operation", "type", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration by route and method.",
            ["route", "method"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.webhook_outcomes = Counter(
            "webhook_deliveries_total",
            "Payment webhook deliveries by outcome.",
            ["outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "rate_limited_total", "Requests refused by a rate limit.", ["limit"], registry=r
        )
        self.cache_requests = Counter(
            "cache_requests_total", "Read cache lookups by result.", ["result"], registry=r
        )
        # multiprocess_mode only matters with PROMETHEUS_MULTIPROC_DIR: how the workers'
        # values combine (per-process counts add up; a database-wide count is the latest).
        self.active_subscriptions = Gauge(
            "graphql_active_subscriptions",
            "Live GraphQL subscriptions.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.active_connections = Gauge(
            "graphql_ws_connections",
            "Open GraphQL websocket connections (pending or acknowledged).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pending_connections = Gauge(
            "graphql_ws_connections_pending",
            "Websockets not acknowledged yet (no connection_ack sent), of all open ones.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ws_refused = Counter(
            "graphql_ws_refused_total",
            "Websockets refused or closed by admission, by reason.",
            ["reason"],
            registry=r,
        )
        self.db_pool_in_use = Gauge(
            "db_pool_connections_in_use",
            "Database connections checked out.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.outbox_backlog = Gauge(
            "outbox_unpublished_events",
            "Status events committed but not yet published.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.redis_up = Gauge(
            "redis_up",
            "1 while Redis answers this component (cache, rate_limits), 0 while it falls back.",
            ["component"],
            registry=r,
            multiprocess_mode="livemin",
        )
        # --- what the alerts of deploy/prometheus/alerts.yml read (docs/operations.md) ---
        self.operation_duration = Histogram(
            "graphql_operation_duration_seconds",
            "GraphQL HTTP operations' duration by operation type (query, mutation, unknown).",
            ["type"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.dead_letters_written = Counter(
            "payment_dead_letters_total",
            "Payments and refunds written to the dead-letter table (the provider failed every "
            "attempt).",
            registry=r,
        )
        self.dead_letters = Gauge(
            "payment_dead_letter_rows",
            "Rows in the payment dead-letter table (read at scrape time).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.refunds_needed = Gauge(
            "payments_needing_refund",
            "Succeeded payments marked needs_refund (their order was cancelled): cleared by a "
            "refund.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.readiness = Gauge(
            "readiness_check_up",
            "1 while a readiness check passes (database, broker, cache, rate_limits), else 0.",
            ["check"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.ws_limit = Gauge(
            "graphql_ws_limit",
            "Configured websocket caps: pending_per_instance, pending_per_address, "
            "connections_per_user, subscriptions_per_connection.",
            ["limit"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.payment_attempts = Counter(
            "payment_provider_attempts_total",
            "Calls to the payment provider by outcome.",
            ["outcome"],
            registry=r,
        )

        # Exported at 0 from the start: an alert on the increase of a series sees its first
        # event (a series that appears at 1 has no increase), and every dashboard query finds
        # its metric on a fresh instance.
        for outcome in (
            "processed", "duplicate", "refund_needed", "ignored", "bad_signature", "malformed",
            "unknown",
        ):  # fmt: skip
            self.webhook_outcomes.labels(outcome)
        for limit in ("create_order", "login_email", "login_ip", "password_hashing"):
            self.rate_limited.labels(limit)
        for result in ("hit", "miss", "bypass"):
            self.cache_requests.labels(result)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)
