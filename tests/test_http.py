"""Transport hygiene: malformed requests, limits, GraphiQL, CORS, masking, health."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from graphql import get_introspection_query

from resolvers import catalog
from tests.client import GraphQLClient


async def test_malformed_json_is_a_400(client: GraphQLClient) -> None:
    response = await client.http.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


async def test_an_oversized_body_is_a_413_not_a_500(client_factory: Any) -> None:
    client = await client_factory(max_body_bytes=2048)
    big = {"query": "{ products { sku } }", "variables": {"pad": "x" * 5000}}
    response = await client.http.post("/graphql", json=big)
    assert response.status_code == 413


async def test_a_streamed_oversized_body_is_a_413(client_factory: Any) -> None:
    client = await client_factory(max_body_bytes=2048)

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.http.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_batched_array_bodies_are_refused(client: GraphQLClient) -> None:
    response = await client.http.post(
        "/graphql", json=[{"query": "{ products { sku } }"}, {"query": "{ products { sku } }"}]
    )
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ products { sku } }"}',
        b'{"query": "query A { products { sku } }", "operationName": "A", "variables": {}}',
        b'{"query": "query A { products { sku } }", "operationName": 5}',
        b'{"query": 42}',
        b'{"query": null}',
        b"{}",
        b'{"query": "{ products { sku } }", "variables": [1]}',
        b'{"query": "{ products { sku } }", "extensions": "x"}',
        b'{"query": "{ products { sku } }", "extensions": {}}',
        b'{"query": "{ nope }"}',
        b'{"query": "subscription { orderStatusChanged { orderId } }"}',
        b'[{"query": "{ products { sku } }"}]',
        b'"text"',
        b"{broken",
    ],
)
async def test_plain_json_bodies_are_answered_as_strawberry_answers_them(
    client: GraphQLClient, body: bytes
) -> None:
    """`application/json` takes the view's own parsing path; any other JSON content type
    (here one that Strawberry reads as JSON and the view leaves to it) takes Strawberry's.
    Both answer the same."""
    answers = []
    for content_type in ("application/json", "x-application/json"):
        response = await client.http.post(
            "/graphql", content=body, headers={"content-type": content_type}
        )
        answers.append((response.status_code, response.text))
    assert answers[0] == answers[1]


async def test_a_wrong_content_type_is_a_4xx(client: GraphQLClient) -> None:
    response = await client.http.post(
        "/graphql", content=b"{ products { sku } }", headers={"content-type": "text/plain"}
    )
    assert 400 <= response.status_code < 500


async def test_no_graphiql_and_no_introspection_in_production(client_factory: Any) -> None:
    strong = "s" * 40
    client = await client_factory(
        app_env="production",
        secret_key=strong,
        webhook_secret=strong,
        payment_provider_url="https://payments.example.com",
    )
    response = await client.http.get("/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in response.text.lower()
    assert response.status_code in (400, 404, 405)
    result = await client.execute("{ __schema { queryType { name } } }")
    assert result.code == "GRAPHQL_VALIDATION_FAILED"


async def test_the_standard_introspection_query_works(client: GraphQLClient) -> None:
    data = (await client.execute(get_introspection_query(descriptions=True))).ok()
    names = {t["name"] for t in data["__schema"]["types"]}
    assert {"Order", "OrderStatusEvent", "Payment"} <= names


async def test_deep_introspection_is_refused(client: GraphQLClient) -> None:
    depth = 40
    query = (
        "{ __schema { types { "
        + "fields { type { " * (depth // 2)
        + "name"
        + " } }" * (depth // 2)
        + " } } }"
    )
    result = await client.execute(query)
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert "depth" in result.errors[0]["message"]


async def test_alias_floods_and_token_floods_are_refused(client: GraphQLClient) -> None:
    aliases = " ".join(f"a{n}: products {{ sku }}" for n in range(200))
    result = await client.execute("{ " + aliases + " }")
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    huge = "{ products { " + "sku " * 5000 + "} }"
    result = await client.execute(huge)
    assert result.code == "GRAPHQL_VALIDATION_FAILED"  # a document limit, as README says


async def test_syntax_and_variable_errors_have_codes(client: GraphQLClient) -> None:
    assert (await client.execute("{ products { sku ")).code == "GRAPHQL_PARSE_FAILED"
    assert (await client.execute("{ nope }")).code == "GRAPHQL_VALIDATION_FAILED"
    result = await client.execute("query($p: Int!) { orders(page: $p) { total } }", {"p": "one"})
    assert result.code == "BAD_USER_INPUT"


async def test_unexpected_errors_are_masked_and_logged_with_the_request_id(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(ctx: Any) -> Any:
        raise RuntimeError("SELECT secret FROM somewhere -- boom")

    monkeypatch.setattr(catalog, "list_products", explode)
    with caplog.at_level(logging.ERROR, logger="order_service.graphql"):
        response = await client.http.post(
            "/graphql", json={"query": "{ products { sku } }"}, headers={"x-request-id": "req-123"}
        )
    body = response.json()
    error = body["errors"][0]
    assert error["message"] == "Internal server error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-123"}
    assert "SELECT" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "req-123"
    assert any("req-123" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_cors_allows_only_configured_origins(client_factory: Any) -> None:
    client = await client_factory(
        cors_origins="https://shop.example.com, https://admin.example.com"
    )
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    ok = await client.http.options(
        "/graphql", headers={"origin": "https://admin.example.com", **preflight}
    )
    assert ok.headers.get("access-control-allow-origin") == "https://admin.example.com"
    bad = await client.http.options(
        "/graphql", headers={"origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in bad.headers


async def test_health_and_ready(client: GraphQLClient) -> None:
    assert (await client.http.get("/health")).json() == {"status": "ok"}
    ready = await client.http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


async def test_ready_is_503_naming_the_database_when_it_is_down(
    client_factory: Any, tmp_path: Any
) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    client = await client_factory(database_url=f"sqlite+aiosqlite:///{missing}")
    ready = await client.http.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unavailable")
    assert (await client.http.get("/health")).status_code == 200


async def test_a_refused_body_has_its_request_id_and_access_line(
    client_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The body limit is part of the request-context middleware: its refusals are requests
    like any other, with the id echoed and one access line."""
    import logging

    client = await client_factory(max_body_bytes=2048)
    caplog.set_level(logging.INFO, logger="order_service.access")

    async def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 1000

    declared = await client.http.post(
        "/graphql", content=b"x" * 3000, headers={"x-request-id": "req-big-1"}
    )
    streamed = await client.http.post(
        "/graphql",
        content=chunks(),
        headers={"content-type": "application/json", "x-request-id": "req-big-2"},
    )
    for response, rid in ((declared, "req-big-1"), (streamed, "req-big-2")):
        assert response.status_code == 413 and response.text == "Request body too large"
        assert response.headers["x-request-id"] == rid
    lines = [r for r in caplog.records if r.name == "order_service.access"]
    assert [(r.__dict__["request_id"], r.__dict__["status"]) for r in lines] == [
        ("req-big-1", 413),
        ("req-big-2", 413),
    ]
