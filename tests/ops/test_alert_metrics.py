"""The metrics the alert rules and the dashboard read (deploy/prometheus/alerts.yml,
deploy/grafana/): each one exported under its name, and moving when what it counts
happens, as a scrape of /metrics shows it."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.client import GraphQLClient
from tests.provider_server import (
    Step,
    initiate,
    new_order,
    open_client,
    post_webhook,
    scripted_provider,
)


async def _scrape(client: GraphQLClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.http.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_readiness_and_websocket_caps_are_exported(client: GraphQLClient) -> None:
    samples = await _scrape(client)
    assert _value(samples, "readiness_check_up", check="database") == 1
    for check in ("broker", "cache", "rate_limits"):
        assert _value(samples, "readiness_check_up", check=check) == 1
    settings = client.app.state.settings
    assert (
        _value(samples, "graphql_ws_limit", limit="pending_per_instance")
        == settings.ws_max_pending_per_instance
    )
    assert (
        _value(samples, "graphql_ws_limit", limit="connections_per_user")
        == settings.ws_max_connections_per_user
    )
    assert _value(samples, "payments_needing_refund") == 0
    assert _value(samples, "payment_dead_letter_rows") == 0
    assert _value(samples, "payment_dead_letters_total") == 0


async def test_a_failing_database_turns_its_readiness_check_down(
    client: GraphQLClient, monkeypatch: Any
) -> None:
    async def down() -> None:
        raise ConnectionRefusedError(111, "refused")

    monkeypatch.setattr(client.app.state.services.db, "ping", down)
    assert (await client.http.get("/ready")).status_code == 503
    samples = await _scrape(client)
    assert _value(samples, "readiness_check_up", check="database") == 0


async def test_operation_durations_are_by_operation_type(client: GraphQLClient) -> None:
    await client.execute("{ __typename }")
    await client.signup("timer@example.com")
    samples = await _scrape(client)
    assert _value(samples, "graphql_operation_duration_seconds_count", type="query") == 1
    assert _value(samples, "graphql_operation_duration_seconds_count", type="mutation") == 1


async def test_a_dead_letter_is_counted_and_shown(settings_factory: Any) -> None:
    with scripted_provider() as provider:
        settings = settings_factory(
            payment_provider_url=provider.url, payment_provider_timeout_seconds=0.3
        )
        async with open_client(settings) as client:
            token = await client.signup("dead@example.com")
            order_id = await new_order(client, token)
            provider.script(Step(500), Step(500), Step(500))
            result = await initiate(client, token, order_id)
            assert result.code == "PAYMENT_PROVIDER_UNAVAILABLE"
            samples = await _scrape(client)
    assert _value(samples, "payment_dead_letters_total") == 1
    assert _value(samples, "payment_dead_letter_rows") == 1


async def test_a_success_after_cancel_shows_as_a_refund_needed(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order_id = await new_order(client, user_token)
    payment = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    (await client.move(admin_token, order_id, "CANCELLED", 1)).ok()
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment["id"], "order_id": order_id, "status": "SUCCESS"}
    answer = await post_webhook(client, event, secret)
    assert answer.json() == {"status": "refund_needed"}
    samples = await _scrape(client)
    assert _value(samples, "payments_needing_refund") == 1
