"""Payment webhook routes: the provider's callback and the simulated provider's page."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from infra.logs import failures
from resolvers.context import Services
from webhooks.delivery import SIGNATURE_HEADER, process_delivery
from webhooks.simulator import simulator_page, simulator_submit

log = logging.getLogger("order_service.webhooks")


async def payment_webhook(request: Request) -> Response:
    services: Services = request.app.state.services
    request_id = (request.scope.get("state") or {}).get("request_id")
    body = await request.body()
    try:
        answer = await process_delivery(
            services, body, request.headers.get(SIGNATURE_HEADER), request_id=request_id
        )
    except Exception as exc:
        # The provider retries a 5xx; say nothing more to it than that. One traceback per
        # outage, not per delivery (infra.logs.RepeatedFailures).
        failures.report(log, "webhook failed", "POST /payments/webhook", exc, request_id=request_id)
        return JSONResponse({"error": "internal", "requestId": request_id}, status_code=500)
    return JSONResponse(answer.body, status_code=answer.status_code)


def webhook_routes(*, simulator: bool) -> list[BaseRoute]:
    """The webhook, and the simulated provider's page only when `simulator` (settings'
    `simulator_enabled`: never beside a real provider, in production only when asked for):
    a route that is not there cannot be reached by a forgotten switch."""
    routes: list[BaseRoute] = [Route("/payments/webhook", payment_webhook, methods=["POST"])]
    if simulator:
        routes += [
            Route("/payments/simulator/{payment_id}", simulator_page, methods=["GET"]),
            Route("/payments/simulator/{payment_id}", simulator_submit, methods=["POST"]),
        ]
    return routes
