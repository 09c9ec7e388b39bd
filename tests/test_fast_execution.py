"""server.transport.execution: the quick pass answers exactly what graphql-core answers."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest
import strawberry
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from server.transport.execution import FastExecutionContext


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Line:
    sku: str
    qty: int


@strawberry.type
class Owner:
    id: strawberry.ID
    email: str


@strawberry.type
class Thing:
    id: strawberry.ID
    name: str | None
    colour: Colour
    lines: list[Line]
    tags: list[str | None]
    owner: Owner | None
    when: datetime
    must: str

    @strawberry.field
    def doubled(self, by: int = 2) -> int:
        return len(self.lines) * by


def _thing(n: int, *, must: str | None = "ok", name: str | None = "a") -> Thing:
    return Thing(
        id=strawberry.ID(str(n)),
        name=name,
        colour=Colour.RED if n % 2 else Colour.BLUE,
        lines=[Line(sku=f"S{i}", qty=i) for i in range(n % 3)],
        tags=["x", None],
        owner=Owner(id=strawberry.ID("9"), email="o@example.com") if n % 2 else None,
        when=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
        must=must,  # type: ignore[arg-type]
    )


@strawberry.type
class Query:
    @strawberry.field
    def things(self) -> list[Thing]:
        return [_thing(n) for n in range(5)]

    @strawberry.field
    async def later(self) -> list[Thing]:
        return [_thing(n, name=None) for n in range(3)]

    @strawberry.field
    def broken(self) -> list[Thing]:
        return [_thing(1), _thing(2, must=None)]

    @strawberry.field
    def wrong_colour(self) -> Thing:
        thing = _thing(1)
        thing.colour = "purple"  # type: ignore[assignment]
        return thing


fast = strawberry.Schema(Query, execution_context_class=FastExecutionContext)
stock = strawberry.Schema(Query, execution_context_class=StrawberryGraphQLCoreExecutionContext)

DOCUMENTS = [
    "{ things { id name colour when tags lines { sku qty } owner { id email } } }",
    "{ later { __typename id name owner { __typename email } } }",
    "{ a: things { i: id l: lines { s: sku } } b: things { id } }",
    "fragment F on Thing { id lines { qty } } { things { ...F ... on Thing { colour } } }",
    "query($on: Boolean!) { things { id name @include(if: $on) colour @skip(if: $on) } }",
    "{ things { id doubled d3: doubled(by: 3) owner { email } } }",
    "{ broken { id must lines { sku } } }",
    "{ wrongColour { id colour } }",
]


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_the_same_answer_as_graphql_core(document: str) -> None:
    variables = {"on": True}
    expected = await stock.execute(document, variable_values=variables)
    got = await fast.execute(document, variable_values=variables)
    assert got.data == expected.data
    assert [e.formatted for e in got.errors or []] == [e.formatted for e in expected.errors or []]


async def test_a_null_in_a_non_null_field_is_still_an_error() -> None:
    result = await fast.execute("{ broken { id must } }")
    assert result.data is None
    assert result.errors and result.errors[0].path == ["broken", 1, "must"]


async def test_plain_objects_skip_graphql_cores_per_field_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved: list[str] = []
    execute_field = FastExecutionContext.execute_field

    def counting(self: FastExecutionContext, *args: object, **kwargs: object) -> object:
        resolved.append(args[2][0].node.name.value)  # type: ignore[index]
        return execute_field(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FastExecutionContext, "execute_field", counting)
    result = await fast.execute("{ things { id lines { sku } owner { email } } }")
    assert result.errors is None
    assert resolved == ["things"]


@strawberry.type
class Ticks:
    @strawberry.subscription
    async def things(self, count: int) -> AsyncGenerator[Thing, None]:
        for n in range(count):
            yield _thing(n)


async def test_a_subscription_collects_its_selection_once_not_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import graphql.execution.executor as executor_module

    calls: list[object] = []
    collect = executor_module.collect_subfields

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return collect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(executor_module, "collect_subfields", counting)
    schema = strawberry.Schema(
        Query, subscription=Ticks, execution_context_class=FastExecutionContext
    )
    results = await schema.subscribe("subscription { things(count: 20) { id lines { sku } } }")
    answers = [r async for r in results]  # type: ignore[union-attr]
    assert len(answers) == 20 and all(r.errors is None for r in answers)
    assert answers[4].data == {"things": {"id": "4", "lines": [{"sku": "S0"}]}}
    assert len(calls) <= 2  # Thing, and Line once
