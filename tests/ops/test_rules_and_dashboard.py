"""The alert rules and the dashboard, checked without Prometheus: every metric they
read is one the service exports, every alert is documented in its runbook, and the
files compose.yml mounts are where it says. (scripts/check-ops runs promtool and the
end-to-end test against a real Prometheus.)"""

from __future__ import annotations

import re

import pytest
import yaml

from infra.metrics import Metrics
from tests.ops.promql import REPO, alert_rules, dashboard_panels, dashboard_queries, metric_names

# Series Prometheus makes itself.
PROMETHEUS_OWN = {"up"}


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        kind = family.type
        base = family.name
        if kind == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        elif kind == "histogram":
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum", f"{base}_created"}
        else:
            names.add(base)
    return names


def test_metric_names_are_read_from_expressions() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (type, le) (rate(a_bucket{x="y z"}[5m]))) / '
        "on (job) group_left max by (job) (b) > 1e-9 and c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_reads_real_metrics_and_has_its_runbook(rule: dict[str, object]) -> None:
    names = metric_names(str(rule["expr"]))
    assert names, rule["expr"]
    assert names <= exported_names() | PROMETHEUS_OWN, names - exported_names()
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["summary"] and len(annotations["description"]) > 80
    assert "Look first at" in annotations["description"]
    anchor = str(rule["alert"]).lower()
    assert annotations["runbook_url"] == f"docs/operations.md#{anchor}"
    runbook = (REPO / "docs/operations.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9-]", "", h.lower()) for h in re.findall(r"(?m)^### (.+)$", runbook)
    }
    assert anchor in headings, f"docs/operations.md has no section ### {rule['alert']}"
    section = runbook.split(f"### {rule['alert']}")[1].split("\n### ")[0]
    for part in ("What it means", "What to check", "How to fix"):
        assert f"**{part}.**" in section, (rule["alert"], part)


def test_the_issue_s_alerts_are_all_there() -> None:
    exprs = {r["alert"]: str(r["expr"]) for r in alert_rules()}
    wanted = {
        "INTERNAL_SERVER_ERROR": "graphql_operations_total",
        "p99": "graphql_operation_duration_seconds_bucket",
        "outbox": "outbox_unpublished_events",
        "dead letters": "payment_dead_letters_total",
        "refunds": "payments_needing_refund",
        "signatures": 'outcome="bad_signature"',
        "readiness": 'readiness_check_up{check="database"}',
        "redis": "redis_up",
        "websockets": "graphql_ws_limit",
    }
    for what, needle in wanted.items():
        assert any(needle in e for e in exprs.values()), what


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=lambda v: str(v)[:40])
def test_every_panel_reads_real_metrics(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, (title, expr)
    assert names <= exported_names(), (title, names - exported_names())


def test_the_dashboard_has_the_issue_s_panels() -> None:
    titles = {p["title"] for p in dashboard_panels()}
    for wanted in (
        "Requests by operation",
        "Latency by operation type (p50, p99)",
        "Errors by code",
        "Websockets",
        "Webhook deliveries",
        "Outbox backlog",
        "Cache hit ratio",
        "Rate-limited requests",
        "Payments by outcome",
        "Dead letters and refunds",
    ):
        assert wanted in titles
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "prometheus"


def test_grafana_provisioning_names_the_dashboard_folder_and_the_datasource_uid() -> None:
    ds = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    [source] = ds["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    boards = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/order-service.yml").read_text()
    )
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
