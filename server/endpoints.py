"""The app's plain HTTP endpoints, each a named function of the request; what they need
comes from `request.app.state` (services, metrics, admission), set by create_app."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from infra import tracing
from infra.metrics import CONTENT_TYPE_LATEST, Metrics
from infra.settings import Settings
from models import queries
from resolvers import events
from resolvers.context import Services
from server.background import CHECK_TIMEOUT_SECONDS, redis_components

REDIS_FALLBACKS = {
    "cache": "Redis unavailable, reads bypass the cache",
    "rate_limits": "Redis unavailable, limits per process",
}


async def root(_: Request) -> Response:
    return JSONResponse(
        {"graphql": "/graphql", "admin": "/admin", "health": "/health", "ready": "/ready"}
    )


async def health(_: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readiness(services: Services, *, ping_broker: bool = True) -> dict[str, str]:
    """Each dependency's check, as /ready reports it; readiness_check_up follows them.
    Without `ping_broker` (a scrape of /metrics) the broker counts as up while its
    subscription listens: no publishing connection is opened just to be asked."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.db.ping(), timeout=CHECK_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        if ping_broker:
            ok = await asyncio.wait_for(services.broker.healthy(), timeout=CHECK_TIMEOUT_SECONDS)
        else:
            ok = bool(getattr(services.broker, "listening", True))
        checks["broker"] = "ok" if ok else "degraded"
    except Exception as exc:
        checks["broker"] = f"degraded: {type(exc).__name__}"
    for name, up in (await redis_components(services)).items():
        checks[name] = "ok" if up else f"degraded: {REDIS_FALLBACKS[name]}"
    for name, value in checks.items():
        services.metrics.readiness.labels(name).set(1 if value == "ok" else 0)
    return checks


async def ready(request: Request) -> Response:
    """Readiness: the database must answer (503 otherwise); Redis only degrades."""
    checks = await readiness(request.app.state.services)
    # Only the database is essential: without Redis the service still answers.
    failed = checks["database"] != "ok"
    degraded = any(v != "ok" for v in checks.values())
    status = "unavailable" if failed else "degraded" if degraded else "ok"
    return JSONResponse({"status": status, "checks": checks}, status_code=503 if failed else 200)


async def metrics_page(request: Request) -> Response:
    """Prometheus' text format; the pool, outbox, readiness, refund and dead-letter gauges
    are read at scrape time."""
    services: Services = request.app.state.services
    metrics: Metrics = request.app.state.metrics
    metrics.db_pool_in_use.set(services.db.pool_in_use())
    with contextlib.suppress(Exception):
        metrics.outbox_backlog.set(await events.backlog(services))
    with tracing.quiet(), contextlib.suppress(Exception):
        await readiness(services, ping_broker=False)  # readiness_check_up, for alerts
    with tracing.quiet(), contextlib.suppress(Exception):
        async with services.db.connect() as conn:
            metrics.refunds_needed.set(await queries.payments_needing_refund(conn))
            metrics.dead_letters.set(await queries.dead_letter_count(conn))
    return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def debug_runtime(request: Request) -> Response:
    """APP_ENV=test only: lets tests see that connections leave nothing behind."""
    services: Services = request.app.state.services
    admission = request.app.state.admission
    return JSONResponse(
        {
            "tasks": len(asyncio.all_tasks()),
            "subscribers": services.broker.fanout.count(),
            "ws_connections": admission.open,
            "ws_pending": admission.pending,
        }
    )


class SinglePageApp(StaticFiles):
    """Static files with index.html for any path that is not a file (client routes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return await super().get_response("index.html", scope)


async def admin_not_built(_: Request) -> Response:
    return HTMLResponse(
        "<h1>Admin not built</h1><p>Run <code>npm --prefix web-admin ci && "
        "npm --prefix web-admin run build</code>, or start with <code>scripts/start</code>."
        "</p>",
        status_code=503,
    )


def admin_routes(dist: Path) -> list[BaseRoute]:
    if (dist / "index.html").is_file():
        return [Mount("/admin", app=SinglePageApp(directory=dist, html=True), name="admin")]
    return [Route("/admin", admin_not_built), Route("/admin/{path:path}", admin_not_built)]


def graphiql_routes(settings: Settings) -> list[BaseRoute]:
    """GraphiQL's assets (its page is GET /graphql); none in production, like the page."""
    assets = settings.graphiql_dist_dir
    if settings.is_production or not (assets / "index.html").is_file():
        return []
    return [Mount("/graphiql", app=StaticFiles(directory=assets), name="graphiql")]
