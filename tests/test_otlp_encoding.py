"""infra/otlp.py writes the OTLP export request itself: it must be the request the
exporter's own encoder makes, for the SDK's spans and for the service's own (tracing's
`_light_span_class`), whatever their attributes, events, links and status, and it must
be what reaches a collector when the fast path is on (and the stock encoder when off)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from infra import otlp, tracing
from tests.conftest import FAST_PATHS


def stock(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def ours(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(otlp.encode(spans))


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "t", "deployment.environment": "ci"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


ATTRIBUTES: dict[str, Any] = {
    "text": "héllo, wörld",
    "empty": "",
    "yes": True,
    "no": False,
    "zero": 0,
    "small": 7,
    "big": 2**62 + 12345,
    "negative": -3,
    "most negative": -(2**63),
    "ratio": 0.25,
    "float zero": 0.0,
    "strings": ("a", "", "c"),
    "ints": [1, -2, 300],
    "bools": [True, False],
    "floats": [1.5, -0.0],
    "none yet": [],
}


def test_the_sdks_spans_encode_as_the_stock_encoder_does(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    tracer = provider.get_tracer("scope.a", "1.2.3", schema_url="https://example.com/s")
    other = provider.get_tracer("scope.b")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span("server", context=parent_ctx, kind=SpanKind.SERVER) as root:
        root.set_attributes(ATTRIBUTES)
        root.add_event("started", {"n": 1, "why": "because"})
        root.add_event("bare")
        with other.start_as_current_span(
            "child",
            kind=SpanKind.CLIENT,
            links=[Link(remote, {"link.kind": "follows"}), Link(root.get_span_context())],
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "it failed: ünïcode"))
        with tracer.start_as_current_span("ok", kind=SpanKind.PRODUCER) as ok:
            ok.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span("", kind=SpanKind.CONSUMER):
            pass
        try:
            with tracer.start_as_current_span("raises"):
                raise ValueError("boom")
        except ValueError:
            pass
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 5
    assert ours(spans) == stock(spans)
    assert ours(spans[:1]) == stock(spans[:1])
    assert otlp.encode([]) == stock([]).SerializePartialToString() == b""


def test_spans_of_two_resources_keep_the_stock_grouping(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    second = TracerProvider(resource=Resource({"service.name": "two"}, "https://example.com/r"))
    second.add_span_processor(SimpleSpanProcessor(exporter))
    for name in ("a", "b"):
        with provider.get_tracer("s1").start_as_current_span(name):
            pass
        with second.get_tracer("s2").start_as_current_span(name):
            pass
    spans = list(exporter.get_finished_spans())
    encoded = ours(spans)
    assert encoded == stock(spans)
    assert len(encoded.resource_spans) == 2
    assert encoded.resource_spans[1].schema_url == "https://example.com/r"
    second.shutdown()


def test_the_services_own_spans_encode_as_the_stock_encoder_does() -> None:
    """The spans `tracing` makes itself under a recorded trace (its light spans): the
    request's, the operation's, a statement's, with an exception recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider, fast_paths=FAST_PATHS == "on")
    try:
        with tracing.span("webhook.process", {"payment.provider": "sim", "attempt": 2}):
            with (
                tracing.operation_span("OrderList", "query"),
                tracing.statement_span("postgresql", "SELECT 1 FROM orders WHERE id = $1"),
            ):
                pass
            try:
                with tracing.operation_span("Broken", "mutation"):
                    raise RuntimeError("no")
            except RuntimeError:
                pass
    finally:
        tracing.disable()
        provider.shutdown()
    spans = list(exporter.get_finished_spans())
    assert {s.name for s in spans} >= {"webhook.process", "query OrderList", "mutation Broken"}
    assert ours(spans) == stock(spans)


def test_an_attribute_otlp_cannot_carry_is_left_out_as_the_stock_encoder_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Light spans take their attributes as given: an int beyond int64 or an object is
    logged and skipped, the rest of the span encoded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider, fast_paths=FAST_PATHS == "on")
    try:
        with tracing.span("outer"), tracing.span("odd", {"ok": "yes"}) as span:
            span.set_attribute("huge", 2**64)
            span.set_attribute("thing", object())
            span.set_attribute("after", 1)
    finally:
        tracing.disable()
        provider.shutdown()
    spans = list(exporter.get_finished_spans())
    with caplog.at_level(logging.ERROR):
        expected = stock(spans)
        got = ours(spans)
    assert got == expected
    (odd,) = [s for s in got.resource_spans[0].scope_spans[0].spans if s.name == "odd"]
    keys = [kv.key for kv in odd.attributes]
    # The SDK's spans (FAST_PATHS=off) turn the object into its str when it is set.
    assert keys == (["ok", "after"] if FAST_PATHS == "on" else ["ok", "thing", "after"])
    assert any("huge" in r.getMessage() for r in caplog.records if r.name == otlp.log.name)


class _Collector(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        self.bodies.append(self.rfile.read(size))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("Handler", (_Collector,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", bodies
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("fast", [True, False])
def test_the_exporter_sends_the_request_with_either_encoder(
    fast: bool,
    collector: tuple[str, list[bytes]],
    recorded: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """configure_from_env puts infra/otlp.py's encoder in the OTLP exporter with
    FAST_PATHS on, the exporter's own with it off; a collector receives the same
    request either way."""
    url, bodies = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    # configure_from_env sets its defaults in os.environ: put back as they were afterwards.
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ):
        monkeypatch.delenv(name, raising=False)
    stock_encoder = trace_exporter.encode_spans
    try:
        assert tracing.configure_from_env(fast_paths=fast) is True
        assert (trace_exporter.encode_spans is not stock_encoder) is fast
    finally:
        configured = tracing._provider
        tracing.disable()
        if configured is not None:
            configured.shutdown()
    assert trace_exporter.encode_spans is stock_encoder  # put back when tracing stops

    provider, exporter = recorded
    with provider.get_tracer("s").start_as_current_span("sent") as span:
        span.set_attributes(ATTRIBUTES)
    spans = list(exporter.get_finished_spans())
    if fast:
        otlp.install()
    try:
        OTLPSpanExporter(endpoint=url).export(spans)
    finally:
        otlp.uninstall()
    assert len(bodies) == 1
    assert ExportTraceServiceRequest.FromString(bodies[0]) == stock(spans)
