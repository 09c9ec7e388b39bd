"""The built-in simulated provider's page: shows a payment, and sends the webhook that a
real provider would, signed, through the same path as `POST /payments/webhook`."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from models.rows import OrderRow, PaymentRow
from resolvers import payments
from resolvers.context import Services
from webhooks.delivery import Answer, process_delivery, signed_delivery

TEMPLATE = Path(__file__).resolve().parent / "templates" / "simulator.html"
OUTCOMES = {
    "SUCCESS": payments.ProviderStatus.SUCCESS,
    "SUCCEED": payments.ProviderStatus.SUCCESS,
    "FAILED": payments.ProviderStatus.FAILED,
    "FAIL": payments.ProviderStatus.FAILED,
}
_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
}


@cache
def _template() -> Template:
    return Template(TEMPLATE.read_text(encoding="utf-8"))


def _money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d} USD"


def _actions(path: str, payment: PaymentRow) -> str:
    if payment.status != payments.PaymentStatus.PENDING:
        return '<p class="hint">This payment is settled; nothing more to choose.</p>'
    action = html.escape(path, quote=True)
    return (
        '<div class="actions">'
        f'<form method="post" action="{action}"><input type="hidden" name="outcome" '
        'value="SUCCESS"><button class="succeed" type="submit">Succeed</button></form>'
        f'<form method="post" action="{action}"><input type="hidden" name="outcome" '
        'value="FAILED"><button class="fail" type="submit">Fail</button></form>'
        "</div>"
    )


def _result(answer: Answer | None) -> str:
    if answer is None:
        return ""
    said = answer.body.get("status") or answer.body.get("message") or ""
    css = "result" if 200 <= answer.status_code < 300 else "result error"
    return (
        f'<p class="{css}" id="webhook-result">The webhook answered '
        f"<strong>{answer.status_code}</strong>: {html.escape(str(said))}</p>"
    )


def _page(
    request: Request, payment: PaymentRow, order: OrderRow, answer: Answer | None
) -> Response:
    path = request.scope.get("root_path", "") + request.url.path
    body = _template().substitute(
        payment_id=html.escape(payment.id),
        order_id=html.escape(str(order.id)),
        order_status=html.escape(order.status),
        payment_status=html.escape(payment.status),
        amount=html.escape(_money(payment.amount_cents)),
        actions=_actions(path, payment),
        result=_result(answer),
    )
    return HTMLResponse(body, headers=_HEADERS)


def _not_found(message: str = "No such payment.") -> Response:
    return HTMLResponse(
        f"<!doctype html><title>Not found</title><h1>Not found</h1><p>{html.escape(message)}</p>",
        status_code=404,
        headers=_HEADERS,
    )


async def _lookup(request: Request) -> tuple[Services, PaymentRow, OrderRow] | None:
    services: Services = request.app.state.services
    if services.provider is not None:
        return None  # a real provider is configured: nobody may settle payments by hand
    found = await payments.find_payment(services, request.path_params["payment_id"])
    return (services, *found) if found is not None else None


async def simulator_page(request: Request) -> Response:
    found = await _lookup(request)
    if found is None:
        return _not_found()
    _, payment, order = found
    return _page(request, payment, order, None)


async def simulator_submit(request: Request) -> Response:
    found = await _lookup(request)
    if found is None:
        return _not_found()
    services, payment, order = found
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    choice = OUTCOMES.get((form.get("outcome") or [""])[0].strip().upper())
    if choice is None:
        return HTMLResponse(
            "<!doctype html><title>Bad request</title><p>outcome must be SUCCESS or FAILED.</p>",
            status_code=400,
            headers=_HEADERS,
        )
    secrets = services.settings.webhook_secrets
    if not secrets:
        return HTMLResponse(
            "<!doctype html><title>No secret</title><p>WEBHOOK_SECRET is empty: the simulated "
            "provider has nothing to sign its webhook with.</p>",
            status_code=503,
            headers=_HEADERS,
        )
    body, headers = signed_delivery(payment.id, payment.order_id, choice.value, secrets[0])
    request_id = (request.scope.get("state") or {}).get("request_id")
    answer = await process_delivery(services, body, headers["X-Signature"], request_id=request_id)
    refreshed = await payments.find_payment(services, payment.id)
    if refreshed is not None:
        payment, order = refreshed
    return _page(request, payment, order, answer)
