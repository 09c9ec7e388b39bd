"""compose.yml's Prometheus and Grafana, checked statically: what each mounts is where the
files that name it expect it, Prometheus scrapes the api service on the port it serves,
Grafana reaches Prometheus under the datasource's address, and every variable is
documented. (scripts/check-deploy runs `docker compose config` and the policy checks;
scripts/check-ops runs promtool and a real Prometheus.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "compose.yml").read_text()))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to the repository), bind mounts only."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container, *_ = str(volume).split(":")
        if host.startswith("./"):
            mounts[container] = host[2:]
    return mounts


def test_prometheus_mounts_its_config_and_the_rules_it_names() -> None:
    prom = _compose()["services"]["prometheus"]
    mounts = _mounts(prom)
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = mounts[config_arg.split("=", 1)[1]]
    config = yaml.safe_load((REPO / config_path).read_text())
    for rule_file in config["rule_files"]:
        assert rule_file in mounts, f"{rule_file} is not mounted"
        assert (REPO / mounts[rule_file]).is_file()
    assert mounts["/etc/prometheus/alerts.yml"] == "deploy/prometheus/alerts.yml"


def test_prometheus_scrapes_the_api_replicas_on_the_port_they_serve() -> None:
    compose = _compose()
    api, prom = compose["services"]["api"], compose["services"]["prometheus"]
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "order-service"  # the alerts' `up{job="order-service"}`
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["type"] == "A"
    command = api["command"]
    assert str(sd["port"]) == command[command.index("--port") + 1]
    assert set(prom["networks"]) & set(api["networks"]), "prometheus cannot reach api"


def test_grafana_mounts_the_provisioning_and_reaches_prometheus() -> None:
    compose = _compose()
    graf, prom = compose["services"]["grafana"], compose["services"]["prometheus"]
    mounts = _mounts(graf)
    assert mounts["/etc/grafana/provisioning"] == "deploy/grafana/provisioning"
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/order-service.yml").read_text()
    )["providers"][0]
    dashboards_in = provider["options"]["path"]
    assert (REPO / mounts[dashboards_in] / "order-service.json").is_file()
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in}/order-service.json"
    [source] = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()  # type: ignore[union-attr]
    assert host == "prometheus" and port == "9090"
    assert set(graf["networks"]) & set(prom["networks"]), "grafana cannot reach prometheus"


def test_monitoring_ports_stay_on_loopback_and_grafana_needs_a_password() -> None:
    services = _compose()["services"]
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), (name, port)
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]*\}", password)
    example = (REPO / ".env.example").read_text()
    assert re.search(r"(?m)^GRAFANA_ADMIN_PASSWORD=$", example)
    for variable in ("PROMETHEUS_PORT", "GRAFANA_PORT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert re.search(rf"(?m)^#?\s*{variable}=", example), variable
