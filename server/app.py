"""The composition root: `create_app(settings)` wires routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from infra.broker import Broker, InProcessBroker, RedisBroker
from infra.cache import Cache, MemoryCache, RedisCache
from infra.limiter import InProcessLimiter, Limiter, RedisLimiter
from infra.logs import failures
from infra.metrics import CONTENT_TYPE_LATEST, Metrics
from infra.provider import PaymentProviderClient
from infra.redis_link import ServerRestarts, redis_client
from infra.security import configure_password_hashing
from infra.settings import Settings
from infra.tasks import cancel_and_wait
from models.db import Database
from resolvers import events
from resolvers.context import Services
from schema import build_schema
from schema.view import GraphQLView, StockGraphQLView
from server.headers import SecurityHeadersMiddleware
from server.middleware import BodyLimitMiddleware, RequestContextMiddleware
from server.ws_admission import WebsocketAdmission
from webhooks.routes import webhook_routes

log = logging.getLogger("order_service")

RELAY_INTERVAL_SECONDS = 1.0
RELAY_MIN_AGE = timedelta(seconds=2)
REDIS_WATCH_INTERVAL_SECONDS = 1.0


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


async def _relay_forever(services: Services) -> None:
    passes = 0
    failing_since: int | None = None
    while True:
        await asyncio.sleep(RELAY_INTERVAL_SECONDS)
        passes += 1
        try:
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


async def _watch_redis(services: Services) -> None:
    """Notices a Redis outage without waiting for traffic, and its end: the cache moves to
    a new epoch as soon as Redis is back, before any instance can serve a stale entry."""
    while True:
        await asyncio.sleep(REDIS_WATCH_INTERVAL_SECONDS)
        for component, check in (
            ("cache", services.cache.healthy),
            ("rate_limits", services.limiter.healthy),
        ):
            try:
                up = await asyncio.wait_for(check(), timeout=3)
            except Exception:
                up = False
            services.metrics.redis_up.labels(component).set(1 if up else 0)


class SinglePageApp(StaticFiles):
    """Static files with index.html for any path that is not a file (client routes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return await super().get_response("index.html", scope)


def _admin_routes(dist: Path) -> list[BaseRoute]:
    if (dist / "index.html").is_file():
        return [Mount("/admin", app=SinglePageApp(directory=dist, html=True), name="admin")]

    async def not_built(_: Request) -> Response:
        return HTMLResponse(
            "<h1>Admin not built</h1><p>Run <code>npm --prefix web-admin ci && "
            "npm --prefix web-admin run build</code>, or start with <code>scripts/start</code>."
            "</p>",
            status_code=503,
        )

    return [Route("/admin", not_built), Route("/admin/{path:path}", not_built)]


def _graphiql_routes(settings: Settings) -> list[BaseRoute]:
    """GraphiQL's assets (its page is GET /graphql); none in production, like the page."""
    assets = settings.graphiql_dist_dir
    if settings.is_production or not (assets / "index.html").is_file():
        return []
    return [Mount("/graphiql", app=StaticFiles(directory=assets), name="graphiql")]


def freeze_startup_heap() -> None:
    """Take what a serving process built to start (modules, the schema, the app: about
    127,000 objects) out of the cyclic garbage collector's reach. Every full collection
    traversed them again: about 150 ms of a stopped event loop each time on the benchmark
    machine, for objects that live as long as the process. What is made later is
    collected as usual. For serving processes only (tests build many apps in one)."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> Starlette:
    metrics = Metrics()
    services_box: dict[str, Services] = {}

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
        services_box["services"] = services
        app.state.services = services
        if isinstance(services.broker, RedisBroker):
            # Redis keeps nothing for a listener that was away: replay from the outbox.
            services.broker.on_reconnect = functools.partial(events.replay_since, services)
        await services.broker.start()
        relay = asyncio.create_task(_relay_forever(services), name="outbox-relay")
        marks = asyncio.create_task(events.mark_published_forever(services), name="outbox-marks")
        background = [relay, marks]
        if settings.redis_url:
            background.append(asyncio.create_task(_watch_redis(services), name="redis-watch"))
        try:
            yield
        finally:
            for task in background:
                await cancel_and_wait(task)
            await events.flush_published(services)
            await services.broker.stop()
            if services.provider is not None:
                await services.provider.aclose()
            redis = services.extras.get("redis")
            if redis is not None:
                await redis.aclose()
            await services.db.dispose()
            failures.flush()  # the counts of failures still repeating when we stop

    # FAST_PATHS: the schema (executor, document caches) and the view (request handling,
    # websocket handlers) follow the same switch.
    view_class = GraphQLView if settings.fast_paths else StockGraphQLView
    view = view_class(
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
    admission = WebsocketAdmission(view, settings=settings, metrics=metrics)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        services: Services = request.app.state.services
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(services.db.ping(), timeout=3)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            ok = await asyncio.wait_for(services.broker.healthy(), timeout=3)
            checks["broker"] = "ok" if ok else "degraded"
        except Exception as exc:
            checks["broker"] = f"degraded: {type(exc).__name__}"
        for name, check, fallback in (
            ("cache", services.cache.healthy, "Redis unavailable, reads bypass the cache"),
            ("rate_limits", services.limiter.healthy, "Redis unavailable, limits per process"),
        ):
            try:
                ok = await asyncio.wait_for(check(), timeout=3)
            except Exception:
                ok = False
            checks[name] = "ok" if ok else f"degraded: {fallback}"
        # Only the database is essential: without Redis the service still answers.
        failed = checks["database"] != "ok"
        degraded = any(v != "ok" for v in checks.values())
        status = "unavailable" if failed else "degraded" if degraded else "ok"
        return JSONResponse(
            {"status": status, "checks": checks}, status_code=503 if failed else 200
        )

    async def metrics_endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        metrics.db_pool_in_use.set(services.db.pool_in_use())
        with contextlib.suppress(Exception):
            metrics.outbox_backlog.set(await events.backlog(services))
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def debug_runtime(request: Request) -> Response:
        # APP_ENV=test only: lets tests see that connections leave nothing behind.
        services: Services = request.app.state.services
        return JSONResponse(
            {
                "tasks": len(asyncio.all_tasks()),
                "subscribers": services.broker.fanout.count(),
                "ws_connections": admission.open,
                "ws_pending": admission.pending,
            }
        )

    async def root(_: Request) -> Response:
        return JSONResponse(
            {"graphql": "/graphql", "admin": "/admin", "health": "/health", "ready": "/ready"}
        )

    routes: list[BaseRoute] = [
        Route("/", root),
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics_endpoint),
        *([Route("/debug/runtime", debug_runtime)] if settings.app_env == "test" else []),
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", admission),
        *webhook_routes(simulator=settings.simulator_enabled),
        *_admin_routes(settings.admin_dist_dir),
        *_graphiql_routes(settings),
    ]
    middleware = [
        Middleware(
            RequestContextMiddleware,
            metrics=metrics,
            trusted_proxies=settings.trusted_proxy_list,
        ),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
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
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    return app
