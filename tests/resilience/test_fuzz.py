"""Fuzzing with schemathesis in GraphQL mode against a running server.

schemathesis reads the schema by introspection and generates documents for every query and
mutation (hypothesis-graphql underneath), valid ones and invalid ones, for a fixed number of
examples with a fixed seed (`derandomize`). Its own `not_a_server_error` check cannot be
used as is: it counts every error that is not a parse or validation error as a server error,
NOT_FOUND and UNAUTHENTICATED included. The checks here are the contract's instead: no 5xx,
no INTERNAL_SERVER_ERROR, every error coded with a code of the contract, nothing internal
in an answer, every answer in under two seconds, no other user's order, and the server
healthy afterwards with nothing unexpected in its log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.graphql import nodes
from schemathesis.specs.graphql.scalars import CUSTOM_SCALARS

from tests.live import LiveServer
from tests.resilience.harness import (
    CONTRACT_CODES,
    PASSWORD,
    Api,
    healthy,
    leaks,
    log_mark,
    run_sync,
    unexpected_errors,
)
from tests.resilience.ledger import Scenario

pytestmark = pytest.mark.timeout(600)

POSITIVE_EXAMPLES = 100
NEGATIVE_EXAMPLES = 20
ANONYMOUS_EXAMPLES = 20
MAX_SECONDS = 2.0
OPERATIONS = {
    "Query.me",
    "Query.products",
    "Query.order",
    "Query.orders",
    "Mutation.signup",
    "Mutation.login",
    "Mutation.createOrder",
    "Mutation.updateOrderStatus",
    "Mutation.initiatePayment",
    "Mutation.upsertProduct",
    "Query.orderStats",
    "Query.paymentDeadLetters",
    "Mutation.retryDeadLetter",
    "Mutation.refundPayment",
}
# Answers that may hold another user's data because the caller proved who they were.
CREDENTIAL_OPERATIONS = {"Mutation.signup", "Mutation.login"}


@dataclass
class Target:
    server: LiveServer
    schema: Any
    tokens: dict[str, str | None]
    emails: dict[str, str]
    others_order_ids: dict[str, set[str]] = field(default_factory=dict)


async def _seed(server: LiveServer, database_url: str) -> tuple[dict[str, Any], list[str]]:
    async with Api.open(server.url, None) as api:
        user, _ = await api.signup("fuzz-user@example.com")
        other, _ = await api.signup("fuzz-other@example.com")
        admin, _ = await api.admin(database_url, "fuzz-admin@example.com")
        ids: dict[str, list[str]] = {"user": [], "other": [], "admin": []}
        for who, token in (("user", user), ("other", other), ("admin", admin)):
            for n in range(3):
                r = await api.create_order(token, f"seed-{who}-{n}", [("WIDGET-001", n + 1)])
                ids[who].append(r.ok()["createOrder"]["id"])
        # One order with a pending payment, one paid, one cancelled: more states to reach.
        await api.gql(
            "mutation($id: ID!) { initiatePayment(input: {orderId: $id}) { id } }",
            {"id": ids["user"][0]},
            user,
        )
        (await api.move(admin, ids["user"][1], "PAID", 1)).ok()
        (await api.move(admin, ids["other"][1], "CANCELLED", 1)).ok()
    tokens = {"user": user, "other": other, "admin": admin}
    return tokens, [i for group in ids.values() for i in group] + ["0", "-1", "999999"]


def _strategies(known_ids: list[str], emails: list[str]) -> dict[str, Any]:
    """Values that reach past validation now and then: real ids, SKUs, emails, tokens."""
    domain = [
        "WIDGET-001",
        "GADGET-002",
        "NO-SUCH-SKU",
        PASSWORD,
        "seed-user-0",
        "token:1.a_b-c",
        "x" * 129,
        "%",
        "_",
        "\\",
        "' OR '1'='1",
        "#1",
        "",
        " ",
        *emails,
    ]
    return {
        "ID": st.one_of(
            st.sampled_from(known_ids).map(nodes.String),
            st.integers(min_value=-(2**70), max_value=2**70).map(lambda i: nodes.String(str(i))),
            st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
            st.text(max_size=40).map(nodes.String),
        ),
        "String": st.one_of(
            st.sampled_from(domain).map(nodes.String),
            st.text(max_size=300).map(nodes.String),
        ),
        "Int": st.one_of(
            st.sampled_from([0, 1, 2, 10, 50, 51, 100, 101, 1000, 1001, -1]).map(nodes.Int),
            st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
        ),
    }


@pytest.fixture(scope="module")
def target(shared_server: tuple[LiveServer, str]) -> Iterator[Target]:
    server, database_url = shared_server
    tokens, known_ids = run_sync(lambda: _seed(server, database_url))
    emails = {
        "user": "fuzz-user@example.com",
        "other": "fuzz-other@example.com",
        "admin": "fuzz-admin@example.com",
    }
    saved = dict(CUSTOM_SCALARS)
    CUSTOM_SCALARS.update(_strategies(known_ids, list(emails.values())))
    try:
        schema = schemathesis.graphql.from_url(f"{server.url}/graphql", timeout=10)
        yield Target(server=server, schema=schema, tokens=tokens, emails=emails)
    finally:
        CUSTOM_SCALARS.clear()
        CUSTOM_SCALARS.update(saved)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    cases: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0

    def add(self, label: str, problem: str, body: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(f"{label}: {problem}\n    document: {body[:400]!r}")


def _judge(
    findings: Findings,
    label: str,
    case: Any,
    response: requests.Response,
    seconds: float,
    foreign: list[str],
) -> None:
    body_text = str(case.body)
    findings.slowest = max(findings.slowest, seconds)
    if seconds > MAX_SECONDS:
        findings.add(label, f"took {seconds:.2f} s", body_text)
    if response.status_code >= 500:
        findings.add(label, f"HTTP {response.status_code}: {response.text[:200]}", body_text)
        return
    try:
        payload = response.json()
    except ValueError:
        findings.add(label, f"not JSON: {response.text[:200]!r}", body_text)
        return
    if not isinstance(payload, dict) or not ("data" in payload or "errors" in payload):
        findings.add(label, f"not a GraphQL answer: {payload!r:.200}", body_text)
        return
    for error in payload.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        findings.codes[str(code)] += 1
        if code not in CONTRACT_CODES:
            findings.add(label, f"error coded {code!r}: {error.get('message')!r}", body_text)
    if leaked := leaks(payload):
        findings.add(label, f"answer shows internals {leaked}", body_text)
    data = payload.get("data")
    if foreign and data and label not in CREDENTIAL_OPERATIONS:
        shown = str(data)
        for marker in foreign:
            if marker in shown:
                findings.add(label, f"answer shows another user's {marker!r}", body_text)


def _fuzz(target: Target, role: str, scenario: Scenario, positive: int, negative: int) -> Findings:
    token = target.tokens.get(role)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # What a USER must never see: the other user's email (admins see everyone's).
    foreign = [target.emails["other"]] if role == "user" else []
    findings = Findings()
    session = requests.Session()
    operations = [result.ok() for result in target.schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS, "the schema's operations changed"
    for operation in operations:
        for mode, examples in (
            (GenerationMode.POSITIVE, positive),
            (GenerationMode.NEGATIVE, negative),
        ):
            if examples:
                _run_cases(operation, mode, examples, session, headers, scenario, findings, foreign)
    return findings


def _run_cases(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    session: requests.Session,
    headers: dict[str, str],
    scenario: Scenario,
    findings: Findings,
    foreign: list[str],
) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        started = time.perf_counter()
        response = case.call(session=session, headers=headers, timeout=10)
        seconds = time.perf_counter() - started
        scenario.sent()
        scenario.tried()
        findings.cases[operation.label] += 1
        _judge(findings, operation.label, case, response, seconds, foreign)

    run()


def _conclude(target: Target, scenario: Scenario, findings: Findings, mark: int) -> None:
    scenario.check(
        "generated documents answered without a 5xx or an uncoded error",
        sum(findings.cases.values()),
    )
    codes = ", ".join(f"{c} {n}" for c, n in findings.codes.most_common())
    scenario.note(f"error codes seen: {codes or 'none'}")
    scenario.note(f"slowest answer: {findings.slowest * 1000:.0f} ms")
    assert healthy(target.server.url), "the server is not healthy after fuzzing"
    surprises = unexpected_errors(target.server, mark)
    assert not findings.problems, "\n".join(findings.problems)
    assert not surprises, "the server logged unexpected errors:\n" + "\n".join(surprises[:10])


@pytest.mark.parametrize("role", ["user", "admin"])
def test_fuzz_every_operation(target: Target, role: str, scenario: Scenario) -> None:
    """Fuzzing (schemathesis, GraphQL): every query and mutation as a USER and an ADMIN"""
    scenario.title = f"Fuzzing as {role.upper()} (schemathesis, every query and mutation)"
    mark = log_mark(target.server)
    findings = _fuzz(target, role, scenario, POSITIVE_EXAMPLES, NEGATIVE_EXAMPLES)
    scenario.note(
        f"{POSITIVE_EXAMPLES} valid and {NEGATIVE_EXAMPLES} invalid generated documents per "
        f"operation ({len(findings.cases)} operations), seed fixed (derandomize)"
    )
    _conclude(target, scenario, findings, mark)


def test_fuzz_anonymous(target: Target, scenario: Scenario) -> None:
    """Fuzzing without a token: everything that needs a login says UNAUTHENTICATED"""
    mark = log_mark(target.server)
    findings = _fuzz(target, "anonymous", scenario, ANONYMOUS_EXAMPLES, 0)
    scenario.note(f"{ANONYMOUS_EXAMPLES} valid generated documents per operation, no token")
    _conclude(target, scenario, findings, mark)
