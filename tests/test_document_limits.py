"""Hostile documents (issue 14, findings 1, 2, 5 and 8): linear-time limits, query cost,
no suggestions while introspection is off, and one code for every document limit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import strawberry
import websockets
from graphql.validation.rules import overlapping_fields_can_be_merged as merging
from strawberry.extensions import AddValidationRules, ParserCache, ValidationCache

from schema.limits import Limits, cost_extension, document_rules
from tests.client import GraphQLClient
from tests.counting import count_calls
from tests.live import live_server
from tests.live_api import live_client

STRONG = "s" * 40
# Shaped like the admin's orders page (web-admin/src/graphql/operations.ts).
ADMIN_ORDERS = """
query AdminOrders($status: OrderStatus, $q: String, $page: Int!, $limit: Int!) {
  orders(status: $status, q: $q, page: $page, limit: $limit) {
    items { ...OrderFields __typename } total page limit pages __typename
  }
}
fragment OrderFields on Order {
  id status version clientToken amountCents createdAt updatedAt
  items { sku qty unitPriceCents lineTotalCents __typename }
  user { id email __typename }
  payment { id status amountCents __typename }
  __typename
}
"""


def fragment_doubling(levels: int) -> str:
    return (
        "query{...F0} "
        + "".join(f"fragment F{i} on Query{{...F{i + 1} ...F{i + 1}}} " for i in range(levels))
        + f"fragment F{levels} on Query{{__typename}}"
    )


def cpu_seconds() -> float:
    return time.process_time()


# --- finding 1: fragments measured once --------------------------------------------------


@pytest.mark.timeout(60)
async def test_doubled_fragment_spreads_are_measured_once(client_factory: Any) -> None:
    # 30 levels of `...F ...F`: 2^30 walks for a depth rule that re-walks every spread.
    # Its 61 spreads are over the default QUERY_MAX_SPREADS (32): the rules must be linear
    # whatever the limit lets through.
    client = await client_factory(query_max_spreads=100)
    started = cpu_seconds()
    result = await client.execute(fragment_doubling(30))
    assert result.errors == []
    assert result.data == {"__typename": "Query"}
    # Generous: the old depth rule needed about 1 s at 18 levels and doubled per level.
    assert cpu_seconds() - started < 2.0


async def test_depth_and_aliases_count_through_fragments(client: GraphQLClient) -> None:
    # 16 levels of fields below the root, directly or through a chain of fragments.
    for levels, refused in ((15, False), (16, True)):
        direct = "{ " + "a { " * levels + "b" + " }" * levels + " }"
        chained = (
            "query Deep { ...P0 } "
            + "".join(f"fragment P{i} on Query {{ a {{ ...P{i + 1} }} }} " for i in range(levels))
            + f"fragment P{levels} on Query {{ b }}"
        )
        for document, name in ((direct, "anonymous"), (chained, "Deep")):
            result = await client.execute(document)
            assert result.code == "GRAPHQL_VALIDATION_FAILED"
            message = f"'{name}' exceeds maximum operation depth of 15"
            assert (result.errors[0]["message"] == message) is refused, result.errors[0]
    # 16 aliases in a fragment spread twice: 32 aliases, over QUERY_MAX_ALIASES (30).
    aliased = "".join(f"a{i}: __typename " for i in range(16))
    result = await client.execute(
        f"{{ ...A ... on Query {{ ...A }} }} fragment A on Query {{ {aliased} }}"
    )
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert result.errors[0]["message"] == "32 aliases found. Allowed: 30"


async def test_fragment_cycles_are_refused(client: GraphQLClient) -> None:
    result = await client.execute(
        "{ ...A } fragment A on Query { ...B } fragment B on Query { ...C } "
        "fragment C on Query { ...A }"
    )
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert "Cannot spread fragment" in result.errors[0]["message"]


# --- finding 2: repeated fields ----------------------------------------------------------


@pytest.mark.parametrize("times", [400, 990])
async def test_a_field_repeated_hundreds_of_times_is_refused_before_merging(
    client: GraphQLClient, times: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before graphql-core's field merging looks at it: that rule compares every
    pair of fields with one response key (0.7 s and 1.0 s of CPU for these two). Counted,
    not timed: the merging's entry point must not run at all for the refused document,
    and does for a small one that passes (the count can fail)."""
    calls = count_calls(monkeypatch, merging, "find_conflicts_within_selection_set")
    result = await client.execute("{" + " me{id}" * times + "}")
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert result.ext["limit"] == "QUERY_MAX_SELECTIONS"
    assert calls == []
    result = await client.execute("{ __typename __typename }")
    assert result.errors == [] and calls


async def test_repeats_of_one_response_key_are_capped(
    client: GraphQLClient, user_token: str
) -> None:
    # Under the selection limit, but the same key again and again (inline fragments merge
    # with their parent's fields, as graphql-core's field merging sees them).
    repeated = "{ me { " + "id ... on User { id } " * 15 + "} }"
    result = await client.execute(repeated, token=user_token)
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert result.ext["limit"] == "QUERY_MAX_REPEATED_FIELDS"
    # A few repeats are legal and answered.
    data = (
        await client.execute("{ me { id id email ... on User { id } } }", token=user_token)
    ).ok()
    assert data["me"]["email"] == "user@example.com"


async def test_size_limits_are_settings(client_factory: Any) -> None:
    client = await client_factory(query_max_nodes=20, query_max_spreads=2, query_max_selections=3)
    result = await client.execute("{ a: __typename b: __typename c: __typename d: __typename }")
    assert result.ext["limit"] == "QUERY_MAX_SELECTIONS"
    result = await client.execute("{ ...F ...F ...F } fragment F on Query { __typename }")
    assert result.ext["limit"] == "QUERY_MAX_SPREADS"
    nested = "{ " + "__typename ... on Query { " * 12 + "__typename" + " }" * 12 + " }"
    result = await client.execute(nested)
    assert result.ext["limit"] == "QUERY_MAX_NODES"
    assert (await client.execute("{ __typename }")).ok() == {"__typename": "Query"}


# --- cost --------------------------------------------------------------------------------


async def test_every_response_reports_its_cost(client: GraphQLClient, admin_token: str) -> None:
    result = await client.execute("{ __typename }")
    assert result.body["extensions"]["cost"] == {"requested": 0, "limit": 2500}
    variables = {"status": None, "q": None, "page": 1}
    for limit, cost in ((10, 131), (100, 1301)):
        result = await client.execute(ADMIN_ORDERS, {**variables, "limit": limit}, admin_token)
        assert result.errors == []
        assert result.body["extensions"]["cost"] == {"requested": cost, "limit": 2500}
    # Errors too: a document that does not validate, one that does not parse.
    result = await client.execute("{ nope }")
    assert result.body["extensions"]["cost"]["limit"] == 2500
    result = await client.execute("{ products { sku ")
    assert result.code == "GRAPHQL_PARSE_FAILED"
    assert result.body["extensions"]["cost"] == {"requested": None, "limit": 2500}


async def test_cached_answers_report_their_cost(client: GraphQLClient, user_token: str) -> None:
    await client.create_order(user_token, "cost-1")
    query = "{ orders(limit: 5) { total items { id user { id } } } }"
    first = await client.execute(query, token=user_token)
    second = await client.execute(query, token=user_token)  # from the read cache
    assert first.body == second.body
    assert second.body["extensions"]["cost"] == {"requested": 1 + 5 * 2, "limit": 2500}


async def test_an_operation_over_the_budget_is_refused_before_it_runs(
    client: GraphQLClient, admin_token: str
) -> None:
    def page(alias: str, limit: int) -> str:
        return f"{alias}: orders(limit: {limit}) {{ items {{ id items {{ sku }} user {{ id }} payment {{ id }} }} }}"

    # 1301 + 651 = 1952: within the budget of 2500.
    result = await client.execute(f"{{ {page('a', 100)} {page('b', 50)} }}", token=admin_token)
    assert result.errors == [] and set(result.data) == {"a", "b"}
    # 2 x 1301 = 2602: over, refused before any resolver ran.
    result = await client.execute(f"{{ {page('a', 100)} {page('b', 100)} }}", token=admin_token)
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert result.data is None
    assert result.ext["cost"] == {"requested": 2602, "limit": 2500}
    assert result.body["extensions"]["cost"] == {"requested": 2602, "limit": 2500}


async def test_the_budget_is_a_setting(client_factory: Any) -> None:
    client = await client_factory(query_max_cost=10)
    result = await client.execute("{ orders(limit: 20) { items { id } } }")
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert result.ext["cost"] == {"requested": 21, "limit": 10}


# --- finding 5: no suggestions while introspection is off ---------------------------------

MISTAKES = {
    "field": ("{ ordrs { total } }", None),
    "argument": ("{ orders(limt: 1) { total } }", None),
    "enum value": ("{ orders(status: PAYD) { total } }", None),
    "input field": (
        'mutation { createOrder(input: {clientToken: "x", itms: []}) { id } }',
        None,
    ),
    "type": ("query($s: OrderStatu) { orders(status: $s) { total } }", None),
    "enum value in a variable": (
        "query($s: OrderStatus) { orders(status: $s) { total } }",
        {"s": "PAYD"},
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
async def test_no_suggestions_in_production(client_factory: Any, mistake: str) -> None:
    query, variables = MISTAKES[mistake]
    development = await client_factory(app_env="development")
    production = await client_factory(
        app_env="production",
        secret_key=STRONG,
        webhook_secret=STRONG,
        payment_provider_url="http://127.0.0.1:9/provider",
    )
    token = await development.signup(f"{mistake.replace(' ', '-')}@example.com")
    shown = await development.execute(query, variables, token)
    # Suggestions stay outside production.
    assert any("Did you mean" in e["message"] for e in shown.errors), shown.errors
    hidden = await production.execute(query, variables, token)
    assert hidden.errors, mistake
    for error in hidden.errors:
        assert "Did you mean" not in error["message"], error["message"]
        assert error["extensions"]["code"] in ("GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT")


@pytest.mark.timeout(60)
async def test_no_suggestions_over_websockets_in_production(
    database_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "APP_ENV": "production",
        "SECRET_KEY": STRONG,
        "WEBHOOK_SECRET": STRONG,
        "PAYMENT_PROVIDER_URL": "http://127.0.0.1:9/provider",
    }
    with live_server(env, tmp_path) as server:
        async with live_client(server.url, database_url) as client:
            token = await client.signup("ws-suggestions@example.com")
        async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            await ws.send(json.dumps(init))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            for op, query in enumerate(
                (
                    "subscription { orderStatusChangd { orderId } }",
                    "subscription { orderStatusChanged { ordrId } }",
                    "subscription { orderStatusChanged(ordrId: 1) { orderId } }",
                )
            ):
                payload = {"query": query}
                await ws.send(json.dumps({"type": "subscribe", "id": str(op), "payload": payload}))
                message = json.loads(await ws.recv())
                assert message["type"] == "error", message
                for error in message["payload"]:
                    assert "Did you mean" not in error["message"], error["message"]


# --- finding 8: one code for every document limit ----------------------------------------


async def test_the_token_limit_is_a_validation_failure_and_syntax_a_parse_failure(
    client: GraphQLClient,
) -> None:
    result = await client.execute("{ products { " + "sku " * 5000 + "} }")
    assert result.code == "GRAPHQL_VALIDATION_FAILED"
    assert result.ext["limit"] == "QUERY_MAX_TOKENS"
    assert result.errors[0]["message"] == "The document has more than 4000 tokens."
    assert (await client.execute("{ products { sku ")).code == "GRAPHQL_PARSE_FAILED"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "exceed the depth, alias, token, size or cost limits" in readme


# --- the same limits as plain validation rules (Strawberry's own extensions) --------------


async def test_the_limits_work_as_strawberry_validation_rules() -> None:
    from graphql import parse, specified_rules, validate

    from server.assembly import build_schema

    schema = build_schema()._schema
    rules = (*document_rules(Limits(max_cost=100)), *specified_rules)
    started = cpu_seconds()
    assert validate(schema, parse(fragment_doubling(30)), rules) == []
    assert cpu_seconds() - started < 2.0
    errors = validate(schema, parse("{" + " me{id}" * 990 + "}"), rules)
    assert [e.extensions["limit"] for e in errors] == ["QUERY_MAX_SELECTIONS"]  # type: ignore[index]
    errors = validate(schema, parse("{ orders(limit: 100) { items { id } } }"), rules)
    assert [e.message for e in errors] == [
        "The query costs 101, more than the limit of 100 (see README, Query cost)."
    ]


@strawberry.type
class StockItem:
    name: str


@strawberry.type
class StockQuery:
    @strawberry.field
    def items(self, limit: int = 10) -> list[StockItem]:
        return [StockItem(name=str(i)) for i in range(limit)]


async def test_the_limits_and_the_cost_on_stock_strawberry_extensions() -> None:
    limits = Limits(max_cost=50)
    rules = list(document_rules(limits))
    schema = strawberry.Schema(
        query=StockQuery,
        extensions=[
            lambda: ParserCache(),
            lambda: ValidationCache(),
            lambda: AddValidationRules(rules),
            cost_extension(limits),
        ],
    )
    result = await schema.execute("query($n: Int!) { items(limit: $n) { name } }", {"n": 5})
    assert result.errors is None and len(result.data["items"]) == 5  # type: ignore[index]
    assert result.extensions == {"cost": {"requested": 5, "limit": 50}}
    result = await schema.execute("query($n: Int!) { items(limit: $n) { name } }", {"n": 60})
    assert result.errors and result.errors[0].extensions["cost"]["requested"] == 60  # type: ignore[index]
    started = cpu_seconds()
    result = await schema.execute(fragment_doubling(30).replace("on Query", "on StockQuery"))
    assert cpu_seconds() - started < 2.0
    assert result.errors is None
    result = await schema.execute("{" + " items { name }" * 200 + "}")
    assert result.errors and result.errors[0].extensions["limit"] == "QUERY_MAX_SELECTIONS"  # type: ignore[index]
