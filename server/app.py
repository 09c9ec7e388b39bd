"""The composition root: `create_app(settings)` wires routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route, WebSocketRoute

from infra import tracing
from infra.broker import Broker, InProcessBroker, RedisBroker
from infra.cache import Cache, MemoryCache, RedisCache
from infra.limiter import InProcessLimiter, Limiter, RedisLimiter
from infra.logs import failures
from infra.metrics import Metrics
from infra.provider import PaymentProviderClient
from infra.redis_link import ServerRestarts, redis_client
from infra.security import configure_password_hashing
from infra.settings import Settings
from infra.tasks import background, cancel_and_wait
from models.db import Database
from resolvers import events
from resolvers.context import Services
from server import endpoints
from server.assembly import build_schema
from server.background import relay_forever, watch_redis
from server.headers import SecurityHeadersMiddleware
from server.middleware import RequestContextMiddleware
from server.transport.view import GraphQLView, StockGraphQLView
from server.ws_admission import WebsocketAdmission
from webhooks.routes import webhook_routes

log = logging.getLogger("order_service")


def _broker(settings: Settings) -> Broker:
    if settings.redis_url:
        return RedisBroker(settings.redis_url, prefix=settings.redis_key_prefix)
    return InProcessBroker()


def build_services(settings: Settings, metrics: Metrics) -> Services:
    configure_password_hashing(settings.password_hash_concurrency)
    cache: Cache = MemoryCache()
    limiter: Limiter = InProcessLimiter()
    extras: dict[str, object] = {}
    if settings.redis_url:
        # One client (a lazy connection pool) for the cache and the limiter.
        restarts = ServerRestarts()
        redis = extras["redis"] = redis_client(settings.redis_url, restarts=restarts)
        cache = RedisCache(redis, prefix=settings.redis_key_prefix, restarts=restarts)
        limiter = RedisLimiter(redis, prefix=settings.redis_key_prefix)
    return Services(
        settings=settings,
        db=Database(settings.database_url, pool_size=settings.db_pool_size),
        broker=_broker(settings),
        cache=cache,
        limiter=limiter,
        metrics=metrics,
        extras=extras,
    )


def freeze_startup_heap() -> None:
    """Take what a serving process built to start (modules, the schema, the app, and what
    uvicorn and the lifespan load: about 280,000 objects) out of the cyclic garbage
    collector's reach. Every full collection traversed them again: about 150 ms of a
    stopped event loop each time on the benchmark machine, for objects that live as long
    as the process. What is made later is collected as usual. Called once the lifespan
    has started (create_app(freeze_heap=True)): frozen right after create_app, the
    155,000 objects uvicorn's protocols, the pools and the broker brought in stayed in
    reach, and a full collection in the hostile-document run still took 60-130 ms. For
    serving processes only (tests build many apps in one)."""
    gc.collect()
    gc.freeze()


def service_lifespan(
    settings: Settings, metrics: Metrics, *, freeze_heap: bool = False
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Builds the services when the app starts (app.state.services), runs the background
    loops, and takes everything down in order when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = build_services(settings, metrics)
        services.provider = PaymentProviderClient.from_settings(
            settings, on_attempt=lambda outcome: metrics.payment_attempts.labels(outcome).inc()
        )
        if settings.is_production and settings.simulator_enabled:
            # Only with PAYMENT_SIMULATOR=on: settings refuse production without a provider.
            log.warning(
                "PAYMENT_SIMULATOR=on in production: the simulated payment provider is served "
                "at /payments/simulator, where whoever starts a payment can mark it paid. "
                "For a demo only; set PAYMENT_PROVIDER_URL (and drop PAYMENT_SIMULATOR) to take "
                "real payments"
            )
        app.state.services = services
        if isinstance(services.broker, RedisBroker):
            # Redis keeps nothing for a listener that was away: replay from the outbox.
            services.broker.on_reconnect = functools.partial(events.replay_since, services)
        # The background tasks make no traces of their own (a task keeps the context it
        # was created in): their polling would start one every second. What the relay
        # publishes is traced (events.publish).
        with tracing.quiet(), background():
            await services.broker.start()
            loops = [
                asyncio.create_task(relay_forever(services), name="outbox-relay"),
                asyncio.create_task(events.mark_published_forever(services), name="outbox-marks"),
            ]
            if settings.redis_url:
                loops.append(asyncio.create_task(watch_redis(services), name="redis-watch"))
        if freeze_heap:
            freeze_startup_heap()
        try:
            yield
        finally:
            for task in loops:
                await cancel_and_wait(task)
            await events.flush_published(services)
            await services.broker.stop()
            if services.provider is not None:
                await services.provider.aclose()
            redis = services.extras.get("redis")
            if redis is not None:
                await redis.aclose()
            await services.db.dispose()
            tracing.shutdown()
            failures.flush()  # the counts of failures still repeating when we stop

    return lifespan


def graphql_endpoint(settings: Settings) -> GraphQLView:
    """The GraphQL view (HTTP, and the websocket protocols behind the admission guard).
    FAST_PATHS: the schema (executor, document caches, live feed) and the view (request
    handling, websocket handlers) follow the same switch."""
    view_class = GraphQLView if settings.fast_paths else StockGraphQLView
    return view_class(
        schema=build_schema(settings),
        graphql_ide=None if settings.is_production else "graphiql",
        ide_dir=settings.graphiql_dist_dir,
        allow_queries_via_get=False,
        keep_alive=True,
        keep_alive_interval=settings.ws_keepalive_seconds,
        max_subscriptions_per_connection=settings.ws_max_subscriptions_per_connection,
        # Strawberry's own handlers' timeout: the same as the admission guard's.
        connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
    )


def middleware_for(settings: Settings, metrics: Metrics) -> list[Middleware]:
    """Outermost first: CORS (when origins are set), request ids, access log, metrics and
    the body limit (one middleware), the security headers."""
    middleware = [
        Middleware(
            RequestContextMiddleware,
            metrics=metrics,
            trusted_proxies=settings.trusted_proxy_list,
            max_body_bytes=settings.max_body_bytes,
        ),
        Middleware(SecurityHeadersMiddleware),
    ]
    if settings.cors_origin_list:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origin_list,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type", "x-request-id"],
                expose_headers=["x-request-id"],
                max_age=600,
            ),
        )
    return middleware


def create_app(settings: Settings, *, freeze_heap: bool = False) -> Starlette:
    """Composes the app: the GraphQL endpoint behind the websocket admission guard, the
    webhook routes, the plain endpoints (server/endpoints.py), middleware and lifespan.
    `freeze_heap`: a serving process's (see freeze_startup_heap)."""
    # Off unless OTEL_* variables ask for it.
    tracing.configure_from_env(fast_paths=settings.fast_paths)
    metrics = Metrics()
    for limit, value in (
        ("pending_per_instance", settings.ws_max_pending_per_instance),
        ("pending_per_address", settings.ws_max_pending_per_address),
        ("connections_per_user", settings.ws_max_connections_per_user),
        ("subscriptions_per_connection", settings.ws_max_subscriptions_per_connection),
    ):
        metrics.ws_limit.labels(limit).set(value)
    view = graphql_endpoint(settings)
    admission = WebsocketAdmission(view, settings=settings, metrics=metrics)
    debug = [Route("/debug/runtime", endpoints.debug_runtime)] if settings.app_env == "test" else []
    routes: list[BaseRoute] = [
        # First: the router tries the routes in order, and nearly every request is this one.
        # No other route matches its path.
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", admission),
        Route("/", endpoints.root),
        Route("/health", endpoints.health),
        Route("/ready", endpoints.ready),
        Route("/metrics", endpoints.metrics_page),
        *debug,
        *webhook_routes(simulator=settings.simulator_enabled),
        *endpoints.admin_routes(settings.admin_dist_dir),
        *endpoints.graphiql_routes(settings),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware_for(settings, metrics),
        lifespan=service_lifespan(settings, metrics, freeze_heap=freeze_heap),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.admission = admission
    return app
