"""End to end against a real Prometheus (Debian's `prometheus` package): it scrapes a
running service that loads deploy/prometheus/alerts.yml; the payment provider fails until
a payment is dead-lettered, and OrderServicePaymentDeadLetters must fire in
/api/v1/alerts. Then every query of the dashboard runs against that Prometheus and must
parse and find its metrics.

Skipped unless TEST_OPS=1 and `prometheus` is on PATH: scripts/check-ops (a step of
.ci/run) runs it, installing the package when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra.security import sign_webhook
from tests.live import LiveServer, free_port, live_server
from tests.ops.promql import ALERTS, dashboard_queries, metric_names
from tests.provider_server import ScriptedProvider, Step, scripted_provider

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("TEST_OPS") != "1" or PROMETHEUS is None,
        reason="end-to-end ops test: TEST_OPS=1 and Debian's prometheus (scripts/check-ops)",
    ),
]

WEBHOOK_SECRET = "ops-e2e-webhook-secret"
ALERT = "OrderServicePaymentDeadLetters"


@pytest.fixture
def provider() -> Iterator[ScriptedProvider]:
    with scripted_provider() as p:
        yield p


@pytest.fixture
def service(database_url: str, provider: ScriptedProvider, tmp_path: Path) -> Iterator[LiveServer]:
    env = {
        "DATABASE_URL": database_url,
        "PAYMENT_PROVIDER_URL": provider.url,
        "PAYMENT_PROVIDER_TIMEOUT_SECONDS": "1",
        "PAYMENT_RETRY_BASE_SECONDS": "0.01",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    env.pop("REDIS_URL", None)
    with live_server(env, tmp_path, name="ops-service") as server:
        yield server


@pytest.fixture
def prometheus(service: LiveServer, tmp_path: Path) -> Iterator[str]:
    assert PROMETHEUS is not None
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "order-service",
                "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get_ok(f"{url}/-/ready"), 30, "Prometheus ready", log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Any, timeout: float, what: str, log_path: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    extra = log_path.read_text(errors="replace")[-3000:] if log_path else ""
    raise AssertionError(f"timed out waiting for {what}\n{extra}")


def _graphql(
    service: LiveServer, query: str, variables: Any = None, token: str | None = None
) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(
        f"{service.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers=headers,
        timeout=10,
    )
    return answer.json()


def _firing(prometheus: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]


def test_a_dead_letter_fires_its_alert_and_every_panel_query_runs(
    service: LiveServer, provider: ScriptedProvider, prometheus: str
) -> None:
    # Prometheus has scraped the counter at 0 before anything fails.
    def scraped() -> bool:
        answer = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": "payment_dead_letters_total"}, timeout=5
        ).json()
        return bool(answer["data"]["result"])

    _wait(scraped, 30, "the first scrape")
    assert _firing(prometheus) == []

    token = _graphql(
        service,
        "mutation($i: SignupInput!) { signup(input: $i) { accessToken } }",
        {"i": {"email": "ops@example.com", "password": "correct-horse-battery"}},
    )["data"]["signup"]["accessToken"]
    order = _graphql(
        service,
        "mutation($i: CreateOrderInput!) { createOrder(input: $i) { id } }",
        {"i": {"items": [{"sku": "WIDGET-001", "qty": 1}], "clientToken": "ops-1"}},
        token,
    )["data"]["createOrder"]
    _graphql(service, "query Orders { orders { total } }", token=token)
    # A forged webhook too: the signature failures' series moves.
    body = b'{"payment_id":"p","order_id":"1","status":"SUCCESS"}'
    httpx.post(
        f"{service.url}/payments/webhook",
        content=body,
        headers={"x-signature": sign_webhook(body, b"not-the-secret")},
        timeout=5,
    )

    # The provider fails every attempt: the payment is dead-lettered.
    provider.script(*[Step(500)] * 10)
    answer = _graphql(
        service,
        "mutation($i: InitiatePaymentInput!) { initiatePayment(input: $i) { id } }",
        {"i": {"orderId": order["id"]}},
        token,
    )
    assert answer["errors"][0]["extensions"]["code"] == "PAYMENT_PROVIDER_UNAVAILABLE"

    [alert] = _wait(lambda: _firing(prometheus), 60, f"{ALERT} to fire")
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["job"] == "order-service"
    assert (
        alert["annotations"]["runbook_url"] == "docs/operations.md#orderservicepaymentdeadletters"
    )
    assert float(alert["value"]) >= 1

    # Every dashboard query parses and reads metrics this Prometheus has seen.
    seen = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=5).json()["data"])
    problems = []
    for title, expr in dashboard_queries():
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
        if answer.status_code != 200 or answer.json().get("status") != "success":
            problems.append(f"{title}: {expr}: {answer.text[:300]}")
            continue
        unknown = metric_names(expr) - seen
        if unknown:
            problems.append(f"{title}: never seen {sorted(unknown)}")
    assert problems == []
