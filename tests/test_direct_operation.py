"""server.transport.execution.DirectOperation answers what Strawberry's `Schema.execute`
answers on the same schema: the same data, the same coded errors (messages, locations,
paths, extensions), the same `extensions.cost`, and the same refusals raised.

Each case runs through both, with contexts alike (the same request id and caller); the
results are compared as the view turns them into a response body."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from strawberry.http import process_result
from strawberry.types.graphql import OperationType

from resolvers.context import RequestContext
from schema.errors import format_error
from server.app import create_app
from tests.client import GraphQLClient

pytestmark = pytest.mark.fast_paths

CASES: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("typename", "{ __typename }", None, None),
    ("named", "query Who { __typename }", {}, "Who"),
    ("first operation, no name given", "query A { __typename } query B { me { id } }", None, None),
    ("second operation by name", "query A { __typename } query B { me { id } }", None, "B"),
    ("caller required", "{ me { id email } }", None, None),
    ("products", "{ products { sku name priceCents } }", None, None),
    ("syntax error", "{ __typename", None, None),
    ("unknown field (suggestion)", "{ ordr { id } }", None, None),
    ("variable of the wrong type", "query($id: ID!) { order(id: $id) { id } }", {"id": []}, None),
    ("variable missing", "query($id: ID!) { order(id: $id) { id } }", {}, None),
    ("alias limit", "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }", None, None),
    ("token limit", "{ " + "__typename " * 5000 + "}", None, None),
    (
        "over the cost budget",
        "{ a: orders(limit: 100) { items { id items { sku } } } "
        "b: orders(limit: 100) { items { id items { sku } } } "
        "c: orders(limit: 100) { items { id items { sku } } } }",
        None,
        None,
    ),
    ("a page", "{ orders(limit: 5) { total items { id status } } }", None, None),
    ("depth", "{ " + "me { " * 20 + "id" + " }" * 20 + " }", None, None),
    (
        "mutation refused by the domain",
        'mutation { createOrder(input: {clientToken: "t", items: []}) { id } }',
        None,
        None,
    ),
    (
        "mutation input invalid",
        "mutation($i: CreateOrderInput!) { createOrder(input: $i) { id } }",
        {"i": {"clientToken": 5}},
        None,
    ),
]

RAISING = [
    ("no query", "", None, None),
    ("unknown operation name", "query A { __typename }", None, "Nope"),
]


def _context(app: Starlette, token: str | None) -> RequestContext:
    ctx = RequestContext(services=app.state.services, request_id="req-direct-1")
    ctx.authenticate(f"Bearer {token}" if token else None)
    return ctx


def _schema(app: Starlette) -> Any:
    view = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/graphql")
    return view.schema


def _body(app: Starlette, result: Any) -> dict[str, Any]:
    """As GraphQLView.process_result makes the response body."""
    quiet = app.state.settings.is_production
    if result.errors:
        result.errors = [format_error(e, "req-direct-1", quiet=quiet) for e in result.errors]
    return dict(process_result(result))


async def _both(
    app: Starlette, query: str, variables: Any, name: str | None, token: str | None
) -> tuple[Any, Any]:
    schema = _schema(app)
    stock = await schema.execute(
        query,
        variable_values=variables,
        context_value=_context(app, token),
        operation_name=name,
        allowed_operation_types=OperationType.from_http("POST"),
    )
    direct = await schema.direct.execute(query, variables, name, _context(app, token), None)
    return _body(app, stock), _body(app, direct)


@pytest.mark.parametrize(("case", "query", "variables", "name"), CASES, ids=[c[0] for c in CASES])
async def test_direct_answers_as_strawberry_does(
    client: GraphQLClient,
    app: Starlette,
    user_token: str,
    case: str,
    query: str,
    variables: Any,
    name: str | None,
) -> None:
    for token in (None, user_token):
        stock, direct = await _both(app, query, variables, name, token)
        assert direct == stock, case
        assert "cost" in direct["extensions"]


async def test_in_production_suggestions_are_hidden_alike(settings_factory: Any) -> None:
    app = create_app(settings_factory(app_env="production", secret_key="x" * 32,
                                      webhook_secret="y" * 32, payment_simulator=True))  # fmt: skip
    async with app.router.lifespan_context(app):
        for query in ("{ ordr { id } }", "{ __schema { types { name } } }", "{ __typename }"):
            stock, direct = await _both(app, query, None, None, None)
            assert direct == stock, query
        assert "Did you mean" not in str(stock)


@pytest.mark.parametrize(
    ("case", "query", "variables", "name"), RAISING, ids=[c[0] for c in RAISING]
)
async def test_direct_refuses_as_strawberry_does(
    app: Starlette, case: str, query: str, variables: Any, name: str | None
) -> None:
    schema = _schema(app)
    with pytest.raises(Exception) as stock:
        await schema.execute(
            query,
            variable_values=variables,
            context_value=_context(app, None),
            operation_name=name,
            allowed_operation_types=OperationType.from_http("POST"),
        )
    with pytest.raises(type(stock.value)):
        await schema.direct.execute(query, variables, name, _context(app, None), None)


async def test_over_http_both_switches_answer_alike(client_factory: Any) -> None:
    """Through the whole app: FAST_PATHS=on (the direct path) and off (Strawberry's view
    and execute), the same status, content type and bytes, for answers and refusals."""
    fast = await client_factory(fast_paths=True)
    stock = await client_factory(fast_paths=False)
    bodies: list[bytes] = [
        b'{"query": "{ __typename }"}',
        b'{"query": "{ __typename }", "variables": null, "operationName": null}',
        b'{"query": "{ ordr }"}',
        b'{"query": ""}',
        b'{"query": 5}',
        b'{"query": "{ __typename }", "operationName": 5}',
        b'{"query": "query A { __typename }", "operationName": "B"}',
        b'{"query": "subscription { orderStatusChanged(orderId: 1) { status } }"}',
        b'{"variables": {}}',
        b"[]",
        b'"text"',
        b"{not json",
    ]
    for body in bodies:
        answers = []
        for client in (fast, stock):
            r = await client.http.post(
                "/graphql",
                content=body,
                headers={"content-type": "application/json", "x-request-id": "req-same"},
            )
            answers.append((r.status_code, r.headers.get("content-type"), r.content))
        assert answers[0] == answers[1], body


async def test_plain_json_operations_skip_strawberrys_request_handling(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAST_PATHS=on: one operation in a plain JSON body is answered without `run`
    (what the other tests compare is then really the direct path); anything else still
    goes through it."""
    from server.transport.view import GraphQLView

    calls: list[str] = []
    run = GraphQLView.run

    async def counting_run(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(request.headers.get("content-type"))
        return await run(self, request, *args, **kwargs)

    monkeypatch.setattr(GraphQLView, "run", counting_run)
    result = await client.execute("{ __typename }")
    assert result.status_code == 200 and result.data == {"__typename": "Query"}
    assert calls == []
    batch = await client.http.post(
        "/graphql", json=[{"query": "{ __typename }"}], headers={"x-request-id": "req-b"}
    )
    assert batch.status_code == 400  # batching is off: Strawberry's own refusal
    assert calls == ["application/json"]
