"""The built-in simulated provider (PAYMENT_PROVIDER_URL unset): its page, its buttons, the
whole flow against a live server, and `order-service simulate-payment`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli import main
from tests.client import CREATE_ORDER, PASSWORD, GraphQLClient
from tests.live import REPO, live_server
from tests.provider_server import (
    INITIATE,
    ORDER,
    initiate,
    metric,
    new_order,
    open_client,
    read_order,
    scripted_provider,
)

FORM_RE = re.compile(
    r'<form method="post" action="([^"]+)"><input type="hidden" name="outcome" '
    r'value="(SUCCESS|FAILED|REFUNDED)">'
)


async def _payment(client: GraphQLClient, token: str) -> tuple[str, dict[str, Any]]:
    order_id = await new_order(client, token)
    return order_id, (await initiate(client, token, order_id)).ok()["initiatePayment"]


async def _press(client: GraphQLClient, payment_id: str, outcome: str) -> httpx.Response:
    """Presses a button: the POST answers 303 to the page (post-redirect-get), which the
    browser then loads."""
    path = f"/payments/simulator/{payment_id}"
    posted = await client.http.post(path, data={"outcome": outcome})
    assert posted.status_code == 303, posted.text
    location = posted.headers["location"]
    assert location.startswith(f"{path}?")
    return await client.http.get(location)


async def test_the_page_shows_the_payment_and_two_buttons(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment = await _payment(client, user_token)

    page = await client.http.get(payment["redirectUrl"])

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert f"#{order_id}" in html
    assert "$10.00 USD" in html
    assert payment["id"] in html
    assert 'id="payment-status">PENDING<' in html
    forms = dict((outcome, action) for action, outcome in FORM_RE.findall(html))
    assert forms == {
        "SUCCESS": f"/payments/simulator/{payment['id']}",
        "FAILED": f"/payments/simulator/{payment['id']}",
    }
    assert ">Succeed</button>" in html and ">Fail</button>" in html


async def test_succeed_sends_a_signed_webhook_and_pays_the_order(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment = await _payment(client, user_token)

    page = await _press(client, payment["id"], "SUCCESS")

    assert page.status_code == 200
    assert "The webhook answered <strong>200</strong>: processed" in page.text
    assert 'id="payment-status">SUCCEEDED<' in page.text
    assert 'id="order-status">PAID · version 2<' in page.text
    assert ">Succeed</button>" not in page.text  # settled: nothing left to choose
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"], order["payment"]["status"]) == (
        "PAID",
        2,
        "SUCCEEDED",
    )
    # It went through the webhook's own path: verified, applied, counted.
    assert metric(client, "webhook_deliveries_total", outcome="processed") == 1

    again = await _press(client, payment["id"], "SUCCESS")
    assert "answered <strong>200</strong>: duplicate" in again.text


async def test_a_reload_shows_the_result_and_sends_nothing(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment = await _payment(client, user_token)
    path = f"/payments/simulator/{payment['id']}"
    posted = await client.http.post(path, data={"outcome": "SUCCESS"})
    assert posted.status_code == 303
    assert posted.headers["cache-control"] == "no-store"

    for _ in range(3):  # the browser reloads the page it was sent to: a GET
        page = await client.http.get(posted.headers["location"])
        assert page.status_code == 200
        assert "The webhook answered <strong>200</strong>: processed" in page.text

    assert metric(client, "webhook_deliveries_total", outcome="processed") == 1
    assert metric(client, "webhook_deliveries_total", outcome="duplicate") == 0
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PAID", 2)


async def test_a_crafted_result_link_shows_no_result(
    client: GraphQLClient, user_token: str
) -> None:
    _, payment = await _payment(client, user_token)
    path = f"/payments/simulator/{payment['id']}"
    posted = await client.http.post(path, data={"outcome": "FAILED"})
    genuine = httpx.URL(posted.headers["location"]).params

    for params in (
        {"answered": "200", "said": "processed", "sig": "0" * 32},
        {**genuine, "said": "payment accepted"},  # another answer under a real signature
        {**genuine, "answered": "500"},
        {"answered": "200", "said": "processed"},
    ):
        page = await client.http.get(path, params=params)
        assert page.status_code == 200
        assert 'id="webhook-result"' not in page.text, params
        assert 'id="payment-status">FAILED<' in page.text


async def test_fail_leaves_the_order_pending(client: GraphQLClient, user_token: str) -> None:
    order_id, payment = await _payment(client, user_token)

    page = await _press(client, payment["id"], "FAILED")

    assert page.status_code == 200
    assert "The webhook answered <strong>200</strong>" in page.text
    assert 'id="payment-status">FAILED<' in page.text
    assert 'id="order-status">PENDING · version 1<' in page.text
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"], order["payment"]["status"]) == (
        "PENDING",
        1,
        "FAILED",
    )


async def test_unknown_payments_and_outcomes_are_refused(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment = await _payment(client, user_token)
    assert (await client.http.get("/payments/simulator/pay_nope")).status_code == 404
    refused = await client.http.post("/payments/simulator/pay_nope", data={"outcome": "SUCCESS"})
    assert refused.status_code == 404
    bad = await client.http.post(f"/payments/simulator/{payment['id']}", data={"outcome": "MAYBE"})
    assert bad.status_code == 400
    assert (await read_order(client, user_token, order_id))["status"] == "PENDING"


async def test_the_simulator_is_off_when_a_real_provider_is_configured(
    settings_factory: Any,
) -> None:
    with scripted_provider() as provider:
        settings = settings_factory(payment_provider_url=provider.url)
        async with open_client(settings) as client:
            token = await client.signup("payer@example.com")
            order_id, payment = await _payment(client, token)
            path = f"/payments/simulator/{payment['id']}"
            assert (await client.http.get(path)).status_code == 404
            posted = await client.http.post(path, data={"outcome": "SUCCESS"})
            assert posted.status_code == 404
            assert (await read_order(client, token, order_id))["status"] == "PENDING"


# --- against a live server ------------------------------------------------------------


def _gql(url: str, query: str, variables: dict[str, Any], token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, headers=headers)
    body = r.json()
    assert not body.get("errors"), body
    return body["data"]


def _signup(url: str, email: str) -> str:
    data = _gql(
        url,
        "mutation($i: SignupInput!) { signup(input: $i) { accessToken } }",
        {"i": {"email": email, "password": PASSWORD}},
    )
    return str(data["signup"]["accessToken"])


def _order_with_payment(url: str, token: str, client_token: str) -> tuple[str, dict[str, Any]]:
    lines = [{"sku": "WIDGET-001", "qty": 1}]
    created = _gql(
        url, CREATE_ORDER, {"input": {"items": lines, "clientToken": client_token}}, token
    )
    order_id = created["createOrder"]["id"]
    payment = _gql(url, INITIATE, {"input": {"orderId": order_id}}, token)["initiatePayment"]
    return order_id, payment


def _server_env(database_url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "PAYMENT_PROVIDER_URL": "", "PUBLIC_URL": "", **extra}


def _pay_through_the_simulator_page(server_url: str) -> None:
    """What a developer does from GraphiQL: order, initiatePayment, open the redirect URL,
    press Succeed."""
    token = _signup(server_url, "e2e@example.com")
    order_id, payment = _order_with_payment(server_url, token, "e2e-1")
    assert payment["redirectUrl"] == f"{server_url}/payments/simulator/{payment['id']}"

    page = httpx.get(payment["redirectUrl"])
    assert page.status_code == 200
    assert f"#{order_id}" in page.text
    actions = {outcome: action for action, outcome in FORM_RE.findall(page.text)}

    posted = httpx.post(f"{server_url}{actions['SUCCESS']}", data={"outcome": "SUCCESS"})
    assert posted.status_code == 303
    done = httpx.get(f"{server_url}{posted.headers['location']}")
    assert done.status_code == 200
    assert "processed" in done.text

    order = _gql(server_url, ORDER, {"id": order_id}, token)["order"]
    assert (order["status"], order["version"]) == ("PAID", 2)
    assert order["payment"]["status"] == "SUCCEEDED"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _main(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI's entry point in this process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    try:
        await asyncio.to_thread(main, list(args))
        code, message = 0, ""
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        message = exc.code if isinstance(exc.code, str) else ""
    out, err = capsys.readouterr()
    return code, out, err + message


async def test_live_server_end_to_end_and_simulate_payment_cli(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One server start for both (starting one is the slow part): the simulated provider's
    page end to end, then `order-service simulate-payment` against the same server."""
    secret = "cli-webhook-secret-0123456789"
    env = _server_env(database_url, WEBHOOK_SECRET=secret)
    with live_server(env, tmp_path) as server:
        await asyncio.to_thread(_pay_through_the_simulator_page, server.url)

        token = _signup(server.url, "cli@example.com")
        order_id, payment = _order_with_payment(server.url, token, "cli-1")
        lonely = _gql(
            server.url,
            CREATE_ORDER,
            {"input": {"items": [{"sku": "WIDGET-001", "qty": 2}], "clientToken": "cli-2"}},
            token,
        )["createOrder"]["id"]

        # Once as the installed command would run...
        paid = await asyncio.to_thread(
            _cli,
            "simulate-payment",
            "success",
            order_id,
            "--url",
            server.url,
            env=env,
            cwd=tmp_path,
        )
        assert paid.returncode == 0, paid.stderr
        assert payment["id"] in paid.stdout
        assert '200 {"status":"processed"}' in paid.stdout
        order = _gql(server.url, ORDER, {"id": order_id}, token)["order"]
        assert (order["status"], order["version"]) == ("PAID", 2)

        # ...then through its entry point, which is quicker than a new interpreter.
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code, out, _ = await _main(
            "simulate-payment", "success", order_id, "--url", server.url, capsys=capsys
        )
        assert (code, '200 {"status":"duplicate"}' in out) == (0, True)

        monkeypatch.setenv("WEBHOOK_SECRET", "some-other-secret-0123456789")
        code, out, _ = await _main(
            "simulate-payment", "failed", order_id, "--url", server.url, capsys=capsys
        )
        assert code != 0
        assert "401" in out
        monkeypatch.setenv("WEBHOOK_SECRET", secret)

        code, _, err = await _main(
            "simulate-payment", "success", lonely, "--url", server.url, capsys=capsys
        )
        assert code != 0
        assert f"order {lonely} has no payment" in err

        order = _gql(server.url, ORDER, {"id": order_id}, token)["order"]
        assert (order["status"], order["version"], order["payment"]["status"]) == (
            "PAID",
            2,
            "SUCCEEDED",
        )

        # A refund the provider made on its own: the payment is REFUNDED, once.
        code, out, _ = await _main(
            "simulate-payment", "refunded", order_id, "--url", server.url, capsys=capsys
        )
        assert (code, '200 {"status":"processed"}' in out) == (0, True)
        code, out, _ = await _main(
            "simulate-payment", "refunded", order_id, "--url", server.url, capsys=capsys
        )
        assert (code, '200 {"status":"duplicate"}' in out) == (0, True)
        order = _gql(server.url, ORDER, {"id": order_id}, token)["order"]
        assert (order["status"], order["version"], order["payment"]["status"]) == (
            "PAID",
            2,
            "REFUNDED",
        )


async def test_simulate_payment_cli_reports_bad_input_and_an_unreachable_server(
    client: GraphQLClient,
    user_token: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    order_id, _ = await _payment(client, user_token)
    monkeypatch.setenv("DATABASE_URL", database_url)

    code, _, err = await _main(
        "simulate-payment", "success", order_id, "--url", "http://127.0.0.1:9", capsys=capsys
    )
    assert code != 0
    assert "could not reach http://127.0.0.1:9/payments/webhook" in err

    code, _, err = await _main("simulate-payment", "success", "abc", capsys=capsys)
    assert code != 0
    assert "is not an order id" in err
    assert (await read_order(client, user_token, order_id))["status"] == "PENDING"


async def test_a_paid_payment_can_be_refunded_from_the_page(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order_id, payment = await _payment(client, user_token)
    paid = await _press(client, payment["id"], "SUCCESS")
    forms = dict((outcome, action) for action, outcome in FORM_RE.findall(paid.text))
    assert forms == {"REFUNDED": f"/payments/simulator/{payment['id']}"}

    refunded = await _press(client, payment["id"], "REFUNDED")

    assert "The webhook answered <strong>200</strong>: processed" in refunded.text
    assert 'id="payment-status">REFUNDED<' in refunded.text
    assert "was refunded" in refunded.text
    assert FORM_RE.findall(refunded.text) == []
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["payment"]["status"]) == ("PAID", "REFUNDED")
    again = await _press(client, payment["id"], "REFUNDED")
    assert "answered <strong>200</strong>: duplicate" in again.text


async def test_the_page_shows_a_refund_made_by_refund_payment(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order_id, payment = await _payment(client, user_token)
    await _press(client, payment["id"], "SUCCESS")
    (await client.move(admin_token, order_id, "CANCELLED", 2)).ok()
    page = await client.http.get(f"/payments/simulator/{payment['id']}")
    assert "needs a refund" in page.text

    refund = await client.execute(
        "mutation($i: RefundPaymentInput!) { refundPayment(input: $i) { status needsRefund } }",
        {"i": {"paymentId": payment["id"]}},
        admin_token,
    )

    assert refund.ok()["refundPayment"] == {"status": "REFUNDED", "needsRefund": False}
    page = await client.http.get(f"/payments/simulator/{payment['id']}")
    assert 'id="payment-status">REFUNDED<' in page.text
