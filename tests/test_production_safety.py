"""What start-up refuses in production (issue 14, finding 4): the payment simulator, which
lets whoever starts a payment mark it paid, is never served in production unless asked for
with PAYMENT_SIMULATOR=on, and never beside a real payment provider."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from infra.settings import Settings
from tests.client import GraphQLClient
from tests.live import REPO, free_port
from tests.provider_server import initiate, new_order, read_order

STRONG = "a-strong-production-secret-0123456789"
PRODUCTION = {"app_env": "production", "secret_key": STRONG, "webhook_secret": STRONG}


def test_production_without_a_provider_is_refused_naming_the_variables() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**PRODUCTION)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "PAYMENT_PROVIDER_URL" in message and "PAYMENT_SIMULATOR=on" in message


def test_the_switch_and_a_provider_together_are_refused() -> None:
    for env in (PRODUCTION, {"app_env": "development"}):
        with pytest.raises(ValidationError, match="PAYMENT_SIMULATOR=on and PAYMENT_PROVIDER_URL"):
            Settings(**env, payment_provider_url="https://pay.example.com", payment_simulator=True)  # type: ignore[arg-type]


def test_what_serves_the_simulator() -> None:
    provider = {"payment_provider_url": "https://pay.example.com"}
    assert Settings(app_env="development").simulator_enabled
    assert Settings(app_env="test").simulator_enabled
    assert not Settings(app_env="development", **provider).simulator_enabled  # type: ignore[arg-type]
    assert not Settings(**PRODUCTION, **provider).simulator_enabled  # type: ignore[arg-type]
    assert Settings(**PRODUCTION, payment_simulator="on").simulator_enabled  # type: ignore[arg-type]


def test_serve_in_production_without_a_provider_exits_naming_the_variable(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PAYMENT_PROVIDER_URL", "PAYMENT_SIMULATOR", "DATABASE_URL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **env,
            "PYTHONPATH": str(REPO),
            "APP_ENV": "production",
            "SECRET_KEY": STRONG,
            "WEBHOOK_SECRET": STRONG,
        },
    )
    assert result.returncode != 0
    assert "PAYMENT_PROVIDER_URL" in result.stderr
    assert "Traceback" not in result.stderr


async def test_production_with_a_provider_has_no_simulator_route(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(
        **PRODUCTION, payment_provider_url="https://pay.example.com"
    )
    path = "/payments/simulator/pay_0123456789abcdef"
    page = await client.http.get(path)
    posted = await client.http.post(path, data={"outcome": "SUCCESS"})
    for answer in (page, posted):
        assert answer.status_code == 404
        assert "payment" not in answer.text.lower()  # no route at all, not the simulator's 404


async def test_production_with_the_switch_serves_the_simulator_and_says_so(
    client_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="order_service")
    client: GraphQLClient = await client_factory(**PRODUCTION, payment_simulator=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("PAYMENT_SIMULATOR=on in production" in w for w in warnings), warnings

    token = await client.signup("shopper@example.com")
    order_id = await new_order(client, token)
    payment = (await initiate(client, token, order_id)).ok()["initiatePayment"]
    assert "/payments/simulator/" in payment["redirectUrl"]
    assert (await client.http.get(payment["redirectUrl"])).status_code == 200
    posted = await client.http.post(payment["redirectUrl"], data={"outcome": "SUCCESS"})
    assert posted.status_code in (200, 303)
    assert (await read_order(client, token, order_id))["status"] == "PAID"
