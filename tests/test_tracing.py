"""OpenTelemetry traces, seen through the SDK's in-memory exporter: which spans a request
makes and how they nest, the trace context carried from a webhook through the broker to
the subscribers (and from the outbox relay), an incoming `traceparent` continued and one
sent on to the provider, the trace id as the request id, and nothing secret in a span."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

from infra import tracing
from infra.broker import BrokerUnavailable
from infra.logs import JsonFormatter
from infra.metrics import Metrics
from infra.settings import Settings
from resolvers import catalog, events
from resolvers.subscriptions import status_feed
from server.middleware import RequestContextMiddleware
from tests.client import PASSWORD, GraphQLClient
from tests.conftest import FAST_PATHS
from tests.provider_server import (
    initiate,
    new_order,
    open_client,
    post_webhook,
    scripted_provider,
)

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


class Traces:
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        for other in self.spans:
            if other.context.span_id == span.parent.span_id:
                return other
        return None

    def ancestors(self, span: ReadableSpan) -> list[str]:
        names = []
        parent = self.parent_of(span)
        while parent is not None:
            names.append(parent.name)
            parent = self.parent_of(parent)
        return names

    def all_attribute_text(self) -> str:
        parts = []
        for s in self.spans:
            parts.append(s.name)
            parts.extend(f"{k}={v}" for k, v in (s.attributes or {}).items())
            for event in s.events:
                parts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
        return "\n".join(parts)

    async def wait_for(self, name: str, count: int = 1) -> list[ReadableSpan]:
        for _ in range(200):
            found = self.named(name)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {name} span: {[s.name for s in self.spans]}")


def _traces(sampler: Sampler) -> Iterator[Traces]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # TEST_FAST_PATHS=off: the API's public functions only (tracing.enable's stock twin).
    tracing.enable(provider, fast_paths=FAST_PATHS == "on")
    try:
        yield Traces(exporter)
    finally:
        tracing.disable()
        provider.shutdown()


@pytest.fixture
def traces() -> Iterator[Traces]:
    yield from _traces(ParentBased(ALWAYS_ON))


def _trace_id(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


async def test_an_operation_is_a_trace_of_operation_use_case_and_statements(
    traces: Traces, client: GraphQLClient
) -> None:
    token = await client.signup("tracer@example.com")
    traces.exporter.clear()
    response = await client.http.post(
        "/graphql",
        json={
            "query": "mutation Place($i: CreateOrderInput!) { createOrder(input: $i) { id } }",
            "operationName": "Place",
            "variables": {
                "i": {"items": [{"sku": "WIDGET-001", "qty": 3}], "clientToken": "ct-77"}
            },
        },
        headers={"authorization": f"Bearer {token}", "traceparent": INCOMING},
    )
    assert response.status_code == 200 and response.json()["data"]["createOrder"]["id"]

    operation = traces.one("mutation Place")
    assert operation.attributes is not None
    assert operation.attributes["graphql.operation.name"] == "Place"
    assert operation.attributes["graphql.operation.type"] == "mutation"
    # The incoming traceparent is continued: the same trace, under the caller's span.
    server = traces.parent_of(operation)
    assert server is not None and server.kind.name == "SERVER"
    assert _trace_id(server) == INCOMING_TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    use_case = traces.one("use_case orders.create")
    assert traces.parent_of(use_case) is operation
    statements = [
        s for s in traces.spans if (s.attributes or {}).get("db.system") in ("sqlite", "postgresql")
    ]
    assert statements, [s.name for s in traces.spans]
    assert all("use_case orders.create" in traces.ancestors(s) for s in statements)
    assert any("INSERT" in str((s.attributes or {}).get("db.statement")) for s in statements)
    # The request id is the trace id: in the header, and so in logs and errors.
    assert response.headers["x-request-id"] == INCOMING_TRACE
    # Variables never become attributes: not the client token, not the quantities.
    text = traces.all_attribute_text()
    assert "ct-77" not in text and "WIDGET-001" not in text


async def test_an_unexpected_error_names_the_trace_as_its_request_id(
    traces: Traces, client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(ctx: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(catalog, "list_products", explode)
    response = await client.http.post(
        "/graphql",
        json={"query": "query Catalog { products { sku } }"},
        headers={"x-request-id": "client-chosen"},
    )
    [error] = response.json()["errors"]
    server = [s for s in traces.spans if s.kind.name == "SERVER"][-1]
    assert error["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR",
        "requestId": _trace_id(server),
    }
    assert response.headers["x-request-id"] == _trace_id(server)
    assert traces.one("query Catalog").attributes["graphql.operation.type"] == "query"  # type: ignore[index]


async def test_log_lines_carry_the_trace_id(traces: Traces) -> None:
    logger = logging.getLogger("order_service.test_tracing")
    with tracing.span("outer") as current:
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "hello", (), None)
        line = orjson.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(current.get_span_context().trace_id, "032x")


async def test_no_password_token_or_email_reaches_a_span(
    traces: Traces, client: GraphQLClient
) -> None:
    await client.signup("secretive@example.com", "correct horse battery staple")
    result = await client.login("secretive@example.com", "correct horse battery staple")
    token = result.ok()["login"]["accessToken"]
    await client.execute("query Me { orders { total } }", token=token)
    text = traces.all_attribute_text()
    assert "correct horse" not in text
    assert "secretive@example.com" not in text
    assert token not in text and token.split(".")[2] not in text
    assert PASSWORD not in text
    assert traces.named("use_case accounts.login")


async def test_the_provider_call_is_a_span_and_sends_the_trace_on(
    traces: Traces, settings_factory: Any
) -> None:
    with scripted_provider() as provider:
        settings: Settings = settings_factory(payment_provider_url=provider.url)
        async with open_client(settings) as client:
            token = await client.signup("payer@example.com")
            order_id = await new_order(client, token)
            traces.exporter.clear()
            (await initiate(client, token, order_id)).ok()
    [call] = [s for s in traces.spans if s.kind.name == "CLIENT" and "POST" in s.name]
    assert "use_case payments.initiate" in traces.ancestors(call)
    [received] = provider.requests
    sent = received.headers["traceparent"]
    assert sent.split("-")[1] == _trace_id(call)
    assert sent.split("-")[2] == format(call.context.span_id, "016x")


async def _paid_webhook(client: GraphQLClient) -> tuple[str, Any]:
    token = await client.signup("hooked@example.com")
    order_id = await new_order(client, token)
    payment = (await initiate(client, token, order_id)).ok()["initiatePayment"]
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    body = {"payment_id": payment["id"], "order_id": order_id, "status": "SUCCESS"}
    return order_id, (body, secret)


async def test_webhook_to_broker_to_subscriber_is_one_trace(
    traces: Traces, client: GraphQLClient
) -> None:
    services = client.app.state.services
    status_feed(services)  # a subscriber feed listens on this process
    if getattr(services.broker, "listening", True) is False:
        for _ in range(100):
            if services.broker.listening:
                break
            await asyncio.sleep(0.05)
    _, (body, secret) = await _paid_webhook(client)
    traces.exporter.clear()
    signed = await post_webhook(client, body, secret)
    assert signed.status_code == 200

    process = traces.one("webhook.process")
    assert "POST /payments/webhook" in traces.ancestors(process)[0]
    publish = (await traces.wait_for("events.publish"))[0]
    assert "webhook.process" in traces.ancestors(publish)
    assert "use_case payments.apply_webhook" in traces.ancestors(publish)
    # The subscriber's span continues the publisher's, through the message's envelope.
    # (A delivery of the setup's own events, initiatePayment's, may end after the clear:
    # its span is in another trace.)
    for _ in range(200):
        ours = [
            s
            for s in traces.named("events.deliver")
            if s.context.trace_id == process.context.trace_id
        ]
        if ours:
            break
        await asyncio.sleep(0.02)
    [deliver] = ours
    assert deliver.parent is not None and deliver.parent.span_id == publish.context.span_id
    assert deliver.kind.name == "CONSUMER" and publish.kind.name == "PRODUCER"
    # The publish span is the broker's call: no span of the broker's command inside it
    # (a Redis PUBLISH), and the trace has no span of the cache's generation bump.
    children = [s for s in traces.spans if s.parent and s.parent.span_id == publish.context.span_id]
    assert children == [deliver], [s.name for s in children]
    assert not traces.named("PUBLISH") and not traces.named("EVALSHA")
    assert dict(publish.attributes or {}) == {
        "messaging.destination.name": "order-status",
        "messaging.operation": "publish",
        "messaging.message.id": (publish.attributes or {})["messaging.message.id"],
    }
    # The signature and the secret are in no span.
    text = traces.all_attribute_text()
    assert signed.request.headers["x-signature"] not in text
    assert secret.decode() not in text


async def test_what_the_relay_publishes_is_a_trace_of_its_own_the_subscriber_continues(
    traces: Traces, client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = client.app.state.services
    status_feed(services)
    _, (body, secret) = await _paid_webhook(client)
    real_publish = services.broker.publish

    async def down(channel: str, message: bytes) -> None:
        raise BrokerUnavailable("test: broker down")

    monkeypatch.setattr(services.broker, "publish", down)
    traces.exporter.clear()
    assert (await post_webhook(client, body, secret)).status_code == 200
    failed = traces.one("events.publish")
    assert failed.status.status_code.name == "ERROR"

    monkeypatch.setattr(services.broker, "publish", real_publish)
    traces.exporter.clear()
    with tracing.quiet():  # as server/app.py's relay loop runs it
        assert await events.relay_once(services, min_age=timedelta(0)) >= 1
    # Events other tests left unpublished in the same database may go out with it: the
    # one this test failed to publish is among them, once.
    message_id = (failed.attributes or {})["messaging.message.id"]
    [relayed] = [
        s
        for s in traces.named("events.publish")
        if (s.attributes or {})["messaging.message.id"] == message_id
    ]
    assert relayed.parent is None  # a trace of its own
    assert (relayed.attributes or {})["order_service.relay"] is True
    # The relay's polling made no spans of its own (no statements, no Redis commands):
    # only the publish, and the broker's command within it.
    others = [s for s in traces.spans if s.name not in ("events.deliver", "events.publish")]
    assert all(traces.ancestors(s) == ["events.publish"] for s in others), others
    # The subscriber's delivery of that event continues the relay's trace.
    delivered: list[Any] = []
    for _ in range(200):
        delivered = [
            s
            for s in traces.named("events.deliver")
            if s.parent is not None and s.parent.span_id == relayed.context.span_id
        ]
        if delivered:
            break
        await asyncio.sleep(0.02)
    assert len(delivered) == 1, [s.name for s in traces.spans]


async def test_subscribers_take_messages_without_an_envelope_and_old_ones_with_one(
    traces: Traces,
) -> None:
    event = events.StatusEvent(1, 2, "PAID", "PENDING", 2, events.utcnow())
    with tracing.publish_span("c", relay=False) as wrap:
        wrapped = wrap(event.encode())
    assert tracing.envelope_traceparent(wrapped) is not None
    assert events.StatusEvent.decode(wrapped) == events.StatusEvent.decode(event.encode())
    assert tracing.envelope_traceparent(event.encode()) is None
    assert tracing.envelope_traceparent(b'{"_trace":"short"}') is None


async def test_unsampled_requests_record_nothing_but_still_have_a_trace_id(
    client: GraphQLClient,
) -> None:
    for traces in _traces(ParentBased(ALWAYS_OFF)):
        response = await client.http.post("/graphql", json={"query": "{ __typename }"})
        assert response.status_code == 200
        token = await client.signup("unsampled@example.com")  # statements, bcrypt, Redis
        await client.create_order(token, "u-1")
        assert traces.spans == []
        # The trace id still names the request.
        request_id = response.headers["x-request-id"]
        assert len(request_id) == 32 and int(request_id, 16) > 0


async def test_an_unsampled_new_trace_names_its_log_lines_and_messages(
    no_new_traces: Traces,
) -> None:
    """An unsampled request's context holds its trace id and no span (`begin_request`):
    its log lines, its request id and the `traceparent` of what it publishes still carry
    that id, marked unsampled, so a subscriber makes no span either; and the context is
    the caller's again once the request is answered."""
    logger = logging.getLogger("order_service.test_tracing")
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["trace_id"] = tracing.current_trace_id()
        seen["active"] = tracing.active()
        with tracing.publish_span("order-status", relay=False) as wrap:
            seen["message"] = wrap(b'{"a":1}')
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "hello", (), None)
        seen["line"] = orjson.loads(JsonFormatter().format(record))

    scope = {"type": "http", "path": "/graphql", "method": "POST", "headers": []}
    middleware = RequestContextMiddleware(
        app, metrics=Metrics(), trusted_proxies=frozenset(), max_body_bytes=1024
    )

    async def send(message: Any) -> None:
        pass

    await middleware(scope, None, send)  # type: ignore[arg-type]
    assert scope["state"]["request_id"] == seen["trace_id"]  # type: ignore[index]
    trace_id = seen["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16) > 0
    assert seen["active"] is False
    assert seen["line"]["trace_id"] == trace_id
    traceparent = tracing.envelope_traceparent(seen["message"])
    assert traceparent is not None
    version, sent_trace, span_id, flags = traceparent.split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "02")
    assert int(span_id, 16) > 0
    with tracing.consume_span(seen["message"], "order-status"):
        pass
    assert no_new_traces.spans == []
    assert tracing.current_trace_id() is None


class _Seen(SpanProcessor):
    """A processor that notes what it is handed."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.name)


def test_our_spans_go_to_the_batch_processor_and_to_a_processor_added_later() -> None:
    """The server span and its children reach a provider whose only processor is the
    SDK's batch processor (configure_from_env's: with FAST_PATHS on, straight to its
    queue) with their parent links; once another processor is added, every span goes
    through the provider's chain again: the new one sees each start and end."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.enable(provider, fast_paths=FAST_PATHS == "on")
    scope = {"type": "http", "path": "/graphql", "method": "POST", "headers": []}

    def request() -> str:
        begun = tracing.begin_request(scope, lambda path: path)
        assert begun is not None and begun[1] is not None  # recorded: always on
        with tracing.span("inner"), tracing.statement_span("sqlite", "SELECT 1"):
            pass
        tracing.end_request(begun, 200)
        return begun[2]

    try:
        first = request()
        assert provider.force_flush()
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert set(spans) == {"POST /graphql", "inner", "sqlite SELECT"}
        assert {format(s.context.trace_id, "032x") for s in spans.values()} == {first}
        assert spans["inner"].parent.span_id == spans["POST /graphql"].context.span_id  # type: ignore[union-attr]
        assert spans["sqlite SELECT"].parent.span_id == spans["inner"].context.span_id  # type: ignore[union-attr]
        assert spans["POST /graphql"].attributes["http.response.status_code"] == 200  # type: ignore[index]

        seen = _Seen()
        provider.add_span_processor(seen)
        exporter.clear()
        request()
        assert provider.force_flush()
        names = ["sqlite SELECT", "inner", "POST /graphql"]
        assert sorted(s.name for s in exporter.get_finished_spans()) == sorted(names)
        assert seen.started == names[::-1] and seen.ended == names
    finally:
        tracing.disable()
        provider.shutdown()


@pytest.fixture
def ratio_zero_traces() -> Iterator[Traces]:
    yield from _traces(ParentBasedTraceIdRatio(0))


async def test_sampler_zero_records_nothing_but_continues_a_sampled_traceparent(
    ratio_zero_traces: Traces, client: GraphQLClient
) -> None:
    """OTEL_TRACES_SAMPLER_ARG=0: every new trace unsampled (no span, not even the
    server's), each still with an id of its own; an incoming sampled `traceparent` is
    traced all the same."""
    request_ids = set()
    for _ in range(5):
        response = await client.http.post("/graphql", json={"query": "{ __typename }"})
        assert response.status_code == 200
        request_ids.add(response.headers["x-request-id"])
    token = await client.signup("zero@example.com")
    await client.create_order(token, "z-1")
    assert ratio_zero_traces.spans == []
    assert len(request_ids) == 5 and all(len(r) == 32 for r in request_ids)
    response = await client.http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"traceparent": INCOMING}
    )
    assert response.headers["x-request-id"] == INCOMING_TRACE
    (server,) = [s for s in ratio_zero_traces.spans if s.kind.name == "SERVER"]
    assert _trace_id(server) == INCOMING_TRACE
    assert ratio_zero_traces.one("query __typename").parent.span_id == server.context.span_id  # type: ignore[union-attr]


async def test_probes_and_scrapes_make_no_spans(traces: Traces, client: GraphQLClient) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert (await client.http.get(path)).status_code == 200
    assert [s for s in traces.spans if s.kind.name == "SERVER"] == []


async def test_tracing_off_makes_no_spans_and_keeps_the_clients_request_id(
    client: GraphQLClient,
) -> None:
    assert not tracing.ENABLED
    response = await client.http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"x-request-id": "mine-1"}
    )
    assert response.headers["x-request-id"] == "mine-1"
    assert tracing.current_trace_id() is None
    with tracing.span("nothing") as current:
        assert current is None


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask(env: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(env) is wanted


def test_configure_from_env_reads_the_sampler_and_exporter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    try:
        assert tracing.configure_from_env() is True
        provider = tracing._provider
        assert provider.sampler.rate == 0.25
        assert provider.resource.attributes["service.name"] == "order-service"
    finally:
        tracing.disable()


HALF = TraceIdRatioBased(0.5)


@pytest.fixture
def half_traces() -> Iterator[Traces]:
    yield from _traces(ParentBased(HALF))


@pytest.fixture
def no_new_traces() -> Iterator[Traces]:
    yield from _traces(ParentBased(ALWAYS_OFF))


async def test_a_new_trace_is_sampled_exactly_as_the_ratio_sampler_decides(
    half_traces: Traces, client: GraphQLClient
) -> None:
    """`begin_request` takes the root decision itself (no SDK span for an unsampled request):
    the sampled requests must be exactly those whose trace id the sampler keeps, and each
    of those is sampled once (not the ratio applied twice)."""
    request_ids = []
    for _ in range(40):
        response = await client.http.post("/graphql", json={"query": "{ __typename }"})
        assert response.status_code == 200
        request_ids.append(response.headers["x-request-id"])
    assert len(set(request_ids)) == 40
    kept = {r for r in request_ids if int(r, 16) & ((1 << 64) - 1) < HALF.bound}
    assert 0 < len(kept) < 40  # both kinds seen (odds of either side missing: 2**-39)
    servers = {_trace_id(s) for s in half_traces.spans if s.kind.name == "SERVER"}
    assert servers == kept
    # Every span is in a sampled request's trace: an unsampled one's made none.
    assert {_trace_id(s) for s in half_traces.spans} == kept
    assert len(half_traces.named("query __typename")) == len(kept)


async def test_an_incoming_sampled_traceparent_is_continued_whatever_the_root_sampler(
    no_new_traces: Traces, client: GraphQLClient
) -> None:
    response = await client.http.post("/graphql", json={"query": "{ __typename }"})
    assert no_new_traces.spans == []
    response = await client.http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"traceparent": INCOMING}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == INCOMING_TRACE
    (server,) = [s for s in no_new_traces.spans if s.kind.name == "SERVER"]
    assert _trace_id(server) == INCOMING_TRACE
    assert no_new_traces.ancestors(no_new_traces.one("query __typename")) == [server.name]


class _EvenTraces(Sampler):
    """A sampler `begin_request` cannot decide for (it keeps the traces with an even id): the
    SDK's path is taken, and the sampler asked."""

    def __init__(self) -> None:
        self.calls = 0

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if trace_id % 2 == 0 else Decision.DROP)

    def get_description(self) -> str:
        return "even trace ids"


EVEN = _EvenTraces()


@pytest.fixture
def even_traces() -> Iterator[Traces]:
    EVEN.calls = 0
    yield from _traces(EVEN)


async def test_another_sampler_decides_through_the_sdk(
    even_traces: Traces, client: GraphQLClient
) -> None:
    request_ids = set()
    for _ in range(20):
        response = await client.http.post("/graphql", json={"query": "{ __typename }"})
        assert response.status_code == 200
        request_ids.add(response.headers["x-request-id"])
    servers = {_trace_id(s) for s in even_traces.spans if s.kind.name == "SERVER"}
    assert servers == {r for r in request_ids if int(r, 16) % 2 == 0}
    assert EVEN.calls >= 20


def test_the_root_decision_is_known_for_ratio_and_static_samplers_only() -> None:
    limit = 1 << 64
    assert tracing.root_bound(TraceIdRatioBased(0.1)) == TraceIdRatioBased(0.1).bound
    assert tracing.root_bound(ParentBased(TraceIdRatioBased(0.25))) == limit // 4
    assert tracing.root_bound(ParentBasedTraceIdRatio(0.5)) == limit // 2
    assert tracing.root_bound(ParentBased(ALWAYS_OFF)) == 0
    assert tracing.root_bound(ALWAYS_ON) == limit
    assert tracing.root_bound(_EvenTraces()) is None
    assert tracing.root_bound(ParentBased(_EvenTraces())) is None


def test_disable_gives_the_provider_its_own_id_generator_back() -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    original = provider.id_generator
    tracing.enable(provider)
    try:
        assert provider.id_generator is not original
        assert provider.id_generator.generate_trace_id() != 0
    finally:
        tracing.disable()
        provider.shutdown()
    assert provider.id_generator is original


def test_asyncpg_is_not_wrapped_while_tracing() -> None:
    """PostgreSQL statements get spans of our own (models/sql.py), only in recorded traces:
    no instrumentation wrapper runs on every asyncpg call."""
    import asyncpg

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    tracing.enable(provider)
    try:
        for name in ("execute", "fetch", "fetchrow", "fetchval"):
            assert not hasattr(getattr(asyncpg.Connection, name), "__wrapped__"), name
    finally:
        tracing.disable()
        provider.shutdown()


@pytest.mark.parametrize(("flags", "delivered"), [("00", 0), ("02", 0), ("01", 1), ("03", 1)])
def test_a_subscriber_follows_the_publishers_sampled_flag(
    traces: Traces, flags: str, delivered: int
) -> None:
    """`-02` is an unsampled trace whose id the SDK drew at random (W3C level 2 flag):
    not sampled either, so no span."""
    message = tracing._envelope(f"00-{INCOMING_TRACE}-00f067aa0ba902b7-{flags}", b'{"a":1}')
    with tracing.consume_span(message, "order-status"):
        pass
    spans = traces.named("events.deliver")
    assert len(spans) == delivered
    if delivered:
        assert _trace_id(spans[0]) == INCOMING_TRACE


async def test_a_redis_call_is_a_span_only_inside_a_recorded_trace(traces: Traces) -> None:
    async def answer() -> str:
        return "ok"

    call = answer()
    with tracing.quiet():
        assert tracing.redis(call, "GET") is call  # untouched: no span, no wrapper
    assert await call == "ok"
    with tracing.span("outer"):
        assert await tracing.redis(answer(), "GET") == "ok"
    [get] = traces.named("GET")
    assert traces.ancestors(get) == ["outer"]
    assert dict(get.attributes or {}) == {"db.system": "redis", "db.operation.name": "GET"}

    async def fails() -> None:
        raise ConnectionError("down")

    with tracing.span("outer"), pytest.raises(ConnectionError):
        await tracing.redis(fails(), "SET")
    [set_] = traces.named("SET")
    assert set_.status.status_code.name == "ERROR"


async def test_a_redis_call_is_untouched_while_tracing_is_off() -> None:
    async def answer() -> int:
        return 1

    call = answer()
    assert tracing.redis(call, "GET") is call
    assert await call == 1


def test_the_resource_is_hashed_once_and_equals_the_sdks() -> None:
    from opentelemetry.sdk.resources import Resource

    sdk = Resource.create({"service.name": "order-service"})
    ours = tracing.resource_with_cached_hash(sdk)
    assert ours == sdk and hash(ours) == hash(sdk)
    assert dict(ours.attributes) == dict(sdk.attributes) and ours.schema_url == sdk.schema_url
    # The encoder groups the spans of one resource together: one key for both.
    assert len({ours: 1, sdk: 2}) == 1


def test_spans_of_our_own_only_under_a_sampler_that_keeps_a_sampled_spans_children() -> None:
    assert tracing.keeps_children(ParentBasedTraceIdRatio(0.1))
    assert tracing.keeps_children(TraceIdRatioBased(0.1)) and tracing.keeps_children(ALWAYS_ON)
    picky = ParentBased(ALWAYS_ON, local_parent_sampled=TraceIdRatioBased(0.5))
    assert not tracing.keeps_children(picky)
