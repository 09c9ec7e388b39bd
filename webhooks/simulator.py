"""The built-in simulated provider's page: shows a payment, and sends the webhook that a
real provider would, signed, through the same path as `POST /payments/webhook`.

Post-redirect-get: the form's POST answers 303 to the page, with the webhook's answer in the
query string (signed, so that a crafted link cannot show an answer the service never gave);
a reload shows that answer again and sends nothing. The page's security headers (strict CSP)
come from server/headers.py, like the admin's and GraphiQL's."""

from __future__ import annotations

import hashlib
import hmac
import html
from functools import cache
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

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
    "REFUNDED": payments.ProviderStatus.REFUNDED,
    "REFUND": payments.ProviderStatus.REFUNDED,
}
_HEADERS = {"cache-control": "no-store"}


@cache
def _template() -> Template:
    return Template(TEMPLATE.read_text(encoding="utf-8"))


def _money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d} USD"


def _actions(path: str, payment: PaymentRow) -> str:
    action = html.escape(path, quote=True)
    if payment.status == payments.PaymentStatus.SUCCEEDED:
        note = (
            "This payment needs a refund: the order was cancelled after it was paid."
            if payment.needs_refund
            else "This payment is settled."
        )
        # A refund made at the provider (its dashboard, a dispute), as a webhook says it.
        return (
            f'<p class="hint">{note} The provider may also give the money back on its own:'
            "</p>"
            f'<div class="actions"><form method="post" action="{action}"><input type="hidden" '
            'name="outcome" value="REFUNDED"><button class="refund" type="submit">'
            "Refund</button></form></div>"
        )
    if payment.status == payments.PaymentStatus.REFUNDED:
        return '<p class="hint">This payment was refunded: the money went back.</p>'
    if payment.status != payments.PaymentStatus.PENDING:
        return '<p class="hint">This payment is settled; nothing more to choose.</p>'
    return (
        '<div class="actions">'
        f'<form method="post" action="{action}"><input type="hidden" name="outcome" '
        'value="SUCCESS"><button class="succeed" type="submit">Succeed</button></form>'
        f'<form method="post" action="{action}"><input type="hidden" name="outcome" '
        'value="FAILED"><button class="fail" type="submit">Fail</button></form>'
        "</div>"
    )


def _said(answer: Answer) -> str:
    return str(answer.body.get("status") or answer.body.get("message") or "")[:200]


def _signature(services: Services, payment_id: str, code: str, said: str) -> str:
    key = services.settings.secret_key.get_secret_value().encode()
    message = f"simulator|{payment_id}|{code}|{said}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def _answer_query(services: Services, payment_id: str, answer: Answer) -> str:
    code, said = str(answer.status_code), _said(answer)
    sig = _signature(services, payment_id, code, said)
    return urlencode({"answered": code, "said": said, "sig": sig})


def _shown_answer(request: Request, services: Services, payment_id: str) -> Answer | None:
    """The answer the redirect after a press carries, if its signature is ours."""
    q = request.query_params
    code, said, sig = q.get("answered", ""), q.get("said", ""), q.get("sig", "")
    if not code.isdigit() or len(code) != 3:
        return None
    if not hmac.compare_digest(sig, _signature(services, payment_id, code, said)):
        return None
    return Answer(status_code=int(code), body={"status": said})


def _result(answer: Answer | None) -> str:
    if answer is None:
        return ""
    css = "result" if 200 <= answer.status_code < 300 else "result error"
    return (
        f'<p class="{css}" id="webhook-result">The webhook answered '
        f"<strong>{answer.status_code}</strong>: {html.escape(_said(answer))}</p>"
    )


def _page(
    request: Request, payment: PaymentRow, order: OrderRow, answer: Answer | None
) -> Response:
    path = request.scope.get("root_path", "") + request.url.path
    body = _template().substitute(
        payment_id=html.escape(payment.id),
        order_id=html.escape(str(order.id)),
        order_status=html.escape(order.status),
        order_version=html.escape(str(order.version)),
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
    services, payment, order = found
    return _page(request, payment, order, _shown_answer(request, services, payment.id))


async def simulator_submit(request: Request) -> Response:
    found = await _lookup(request)
    if found is None:
        return _not_found()
    services, payment, _ = found
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    choice = OUTCOMES.get((form.get("outcome") or [""])[0].strip().upper())
    if choice is None:
        return HTMLResponse(
            "<!doctype html><title>Bad request</title><p>outcome must be SUCCESS, FAILED or "
            "REFUNDED.</p>",
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
    path = request.scope.get("root_path", "") + request.url.path
    return RedirectResponse(
        f"{path}?{_answer_query(services, payment.id, answer)}", status_code=303, headers=_HEADERS
    )
