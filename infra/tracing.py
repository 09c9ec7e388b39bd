"""OpenTelemetry tracing: off unless the standard OTEL_* variables ask for it.

Turned on by `configure_from_env()` (server/app.py, once per process) when
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (or
OTEL_TRACES_EXPORTER names an exporter), and OTEL_SDK_DISABLED is not true. The SDK reads
the rest itself: OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the
default here is `parentbased_traceidratio` at 0.1), OTEL_EXPORTER_OTLP_* for the exporter.
The packages come with the `otel` extra (`pip install "order-service[otel]"`); without them
the variables are reported once and ignored.

While off, every hook costs one module attribute read (`tracing.ENABLED`) and nothing
else: the instrumentations are not installed, the ASGI app is not wrapped.

Trace layout (docs/operations.md, "Traces"): the server span (`ServerSpans`; an incoming
`traceparent` is continued) > the GraphQL operation span
(`query OrderList`: the operation's name and type, never its variables) > the use case
(`use_case orders.place`) > each database statement (`postgresql` or `sqlite` spans of our
own, models/sql.py), Redis commands (`redis()`: the name only, no argument) and the
provider's HTTP calls (httpx's instrumentation, `traceparent` sent on). A webhook is
`webhook.process` > `use_case payments.apply_webhook` > ... > `events.publish`; the
broker message carries the publish span's `traceparent` in its envelope (`_trace`), and
each process's subscriber feed continues it as `events.deliver`. Events left to the outbox
relay are published in a trace of their own (`events.relay` > `events.publish`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("order_service.tracing")

# Read by every hook: the only cost while tracing is off.
ENABLED = False

_tracer: Any = None
_provider: Any = None
_instrumentors: list[Any] = []
# The provider's id generator, wrapped (`_Ids`), and the root sampler's bound on a trace
# id's low 64 bits when `ServerSpans` can take the sampling decision of a new trace itself
# (a ratio, always on or off, ParentBased or not); None otherwise (another sampler).
_ids: Any = None
_root_bound: int | None = None
_TRACE_ID_LOW = (1 << 64) - 1

P = ParamSpec("P")
R = TypeVar("R")

# The envelope of a broker message: `{"_trace":"<traceparent>",` before the event's own
# fields. A W3C traceparent (version 00) is always 55 characters.
ENVELOPE_PREFIX = b'{"_trace":"'
_TRACEPARENT_LEN = 55

DEFAULT_SAMPLER = "parentbased_traceidratio"
DEFAULT_SAMPLER_ARG = "0.1"


# Bound by `enable()`: read on every request, not imported there.
_get_value: Any = None
_suppress_key: Any = None
_current_span: Any = None


def active() -> bool:
    """Tracing is on and the current trace is recorded: not an unsampled request, whose
    spans would all be dropped (`wrap_asgi` suppresses the instrumentations for those),
    nor a `quiet()` block. Spans of our own are made only then."""
    return ENABLED and not _get_value(_suppress_key)


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or exporter
    )


def configure_from_env() -> bool:
    """Turn tracing on when the environment asks for it (once per process); whether on."""
    if ENABLED:
        return True
    if not wanted():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import _get_from_env_or_default
    except ImportError:
        log.warning(
            "OTEL_* variables are set but the tracing packages are not installed "
            '(pip install "order-service[otel]"); tracing stays off'
        )
        return False
    os.environ.setdefault("OTEL_SERVICE_NAME", "order-service")
    os.environ.setdefault("OTEL_TRACES_SAMPLER", DEFAULT_SAMPLER)
    if os.environ["OTEL_TRACES_SAMPLER"] == DEFAULT_SAMPLER:
        os.environ.setdefault("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLER_ARG)
    provider = TracerProvider(resource=Resource.create(), sampler=_get_from_env_or_default())
    provider.add_span_processor(BatchSpanProcessor(_exporter_from_env()))
    enable(provider)
    log.info(
        "tracing on: service %s, sampler %s %s",
        os.environ["OTEL_SERVICE_NAME"],
        os.environ["OTEL_TRACES_SAMPLER"],
        os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""),
    )
    return True


def _exporter_from_env() -> Any:
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # OTLP over HTTP/protobuf (port 4318): endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def enable(provider: Any) -> None:
    """Trace through `provider` (tests pass one with an in-memory exporter): our spans
    (httpx's instrumentation: per client, `instrument_httpx`)."""
    global ENABLED, _tracer, _provider, _get_value, _suppress_key, _current_span
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
    from opentelemetry.trace import get_current_span

    global _ids, _root_bound
    disable()
    _get_value, _suppress_key, _current_span = (
        get_value,
        _SUPPRESS_INSTRUMENTATION_KEY,
        get_current_span,
    )
    _provider = provider
    _root_bound = root_bound(provider.sampler)
    # Before any tracer is made: each tracer keeps the generator it was given.
    _ids = provider.id_generator = _Ids(provider.id_generator)
    _tracer = provider.get_tracer("order_service")
    # No asyncpg or redis instrumentation: models/sql.py makes the statement spans and
    # infra/ its Redis calls' (`redis()`), for recorded traces only. The instrumentations'
    # wrappers run on every call, sampled or not, and put half a dozen attributes or more
    # on each span (docs/operations.md, "Traces"; docs/benchmarks.md, "Tracing").
    ENABLED = True


def root_bound(sampler: Any) -> int | None:
    """What decides whether a new trace (no incoming `traceparent`) is sampled: its trace
    id's low 64 bits below this bound (as `TraceIdRatioBased`, the default root); None for a
    sampler whose root is none of ratio, always on, always off."""
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        StaticSampler,
        TraceIdRatioBased,
    )

    # ParentBased keeps its root sampler in `_root` (no public accessor).
    root = getattr(sampler, "_root", None) if isinstance(sampler, ParentBased) else sampler
    if isinstance(root, TraceIdRatioBased):
        return int(root.bound)
    if isinstance(root, StaticSampler):
        return 0 if root._decision is Decision.DROP else _TRACE_ID_LOW + 1
    return None


class _Ids:
    """The provider's id generator, which hands out once the trace id `ServerSpans` drew
    (and found sampled) to the span the SDK then starts: that span's sampler sees the same
    id and makes the same decision."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.next_trace_id = 0
        self.generate_span_id = inner.generate_span_id
        self.is_trace_id_random = inner.is_trace_id_random

    def generate_trace_id(self) -> int:
        trace_id = self.next_trace_id
        if trace_id:
            self.next_trace_id = 0
            return trace_id
        return int(self.inner.generate_trace_id())


def disable() -> None:
    global ENABLED, _tracer, _provider, _ids, _root_bound
    ENABLED = False
    if _provider is not None and isinstance(_provider.id_generator, _Ids):
        _provider.id_generator = _provider.id_generator.inner
    _ids, _root_bound = None, None
    for instrumentor in _instrumentors:
        instrumentor.uninstrument()
    _instrumentors.clear()
    _tracer = _provider = None


def shutdown() -> None:
    """Send what is buffered (at the end of the process's lifespan)."""
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.force_flush(timeout_millis=5000)


# --- the request's edge ----------------------------------------------------------------


def wrap_asgi(app: Any, *, route_of: Callable[[str], str] | None = None) -> Any:
    """`app` behind a server span per HTTP request (`POST /graphql`), continuing an
    incoming `traceparent`. Websockets get none (a span would last as long as the
    connection); probes and scrapes (`EXCLUDED_PATHS`) neither.

    Our own, not the maintained ASGI instrumentation's: that one collects a dozen
    attributes and records two histograms on every request, sampled or not, for about
    95 µs of CPU (a fifth of a trivial query; docs/benchmarks.md, "Tracing"). Here an
    unsampled request costs the sampling decision and one context switch, and runs with
    the instrumentations suppressed: its spans would be dropped anyway. Its trace id
    still names it (request id, log lines)."""
    return ServerSpans(app, route_of=route_of or (lambda path: path))


EXCLUDED_PATHS = frozenset(("/health", "/ready", "/metrics"))


class ServerSpans:
    def __init__(self, app: Any, *, route_of: Callable[[str], str]) -> None:
        from opentelemetry import context, trace
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
        from opentelemetry.trace.propagation import _SPAN_KEY
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.app = app
        self.route_of = route_of
        self._context = context
        self._trace = trace
        self._suppress_key = _SUPPRESS_INSTRUMENTATION_KEY
        self._server = SpanKind.SERVER
        self._propagator = TraceContextTextMapPropagator()
        self._span_key = _SPAN_KEY
        self._non_recording = NonRecordingSpan
        self._span_context = SpanContext
        self._flags = TraceFlags(TraceFlags.RANDOM_TRACE_ID if _ids.is_trace_id_random() else 0)

    def _unsampled(self, trace_id: int) -> Any:
        """The context of a new trace found unsampled: its span made directly, as the SDK
        would (a NonRecordingSpan with fresh ids), without the SDK's span machinery, and
        the instrumentations suppressed. About 3 µs where `start_span` takes about 13."""
        span = self._non_recording(
            self._span_context(trace_id, _ids.generate_span_id(), False, self._flags)
        )
        return self._context.Context({self._span_key: span, self._suppress_key: True})

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] != "http" or scope["path"] in EXCLUDED_PATHS or not ENABLED:
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        context, trace = self._context, self._trace
        carrier: dict[str, str] = {}
        for name, value in scope.get("headers") or ():
            if name == b"traceparent" or name == b"tracestate":
                carrier[name.decode()] = value.decode("latin-1")
        bound = _root_bound
        if not carrier and bound is not None:
            # A new trace: the root sampler's decision taken here, on the id the SDK would
            # draw. 9 in 10 requests (at 10%) stop at this: no span object of the SDK's.
            trace_id = _ids.inner.generate_trace_id()
            if trace_id & _TRACE_ID_LOW >= bound:
                token = context.attach(self._unsampled(trace_id))
                try:
                    await self.app(scope, receive, send)
                finally:
                    context.detach(token)
                return
            _ids.next_trace_id = trace_id  # taken by the start_span just below
        parent = self._propagator.extract(carrier) if carrier else context.Context()
        method = scope["method"]
        span = _tracer.start_span(
            f"{method} {self.route_of(scope['path'])}",
            context=parent,
            kind=self._server,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        )
        _ids.next_trace_id = 0
        recording = span.is_recording()
        ctx = trace.set_span_in_context(span, parent)
        if not recording:
            ctx = context.set_value(self._suppress_key, True, ctx)
        token = context.attach(ctx)
        try:
            if not recording:
                await self.app(scope, receive, send)
                return

            async def send_status(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        from opentelemetry.trace import Status, StatusCode

                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            except BaseException as exc:
                span.record_exception(exc)
                raise
        finally:
            context.detach(token)
            span.end()


def instrument_httpx(client: Any) -> None:
    """Spans for the client's calls, with `traceparent` sent on."""
    if not ENABLED:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_provider)


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), sampled or not; None without one."""
    if not ENABLED:
        return None
    trace_id = _current_span().get_span_context().trace_id
    return format(trace_id, "032x") if trace_id else None


# --- spans of our own ------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, kind: str = "INTERNAL"
) -> Iterator[Any]:
    """A child of the current span. Callers check `ENABLED` first on hot paths; here it
    is checked again so that a call while off is a no-op."""
    if not active():
        yield None
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(name, kind=SpanKind[kind]) as current:
        # Attributes only for a span that is kept: an unsampled one ignores them anyway.
        if attributes and current.is_recording():
            current.set_attributes(attributes)
        yield current


def use_case(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorates a use case (a coroutine function of resolvers/) with a span of its name."""
    span_name = f"use_case {name}"

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            if not active():
                return await fn(*args, **kwargs)
            with _tracer.start_as_current_span(span_name):
                return await fn(*args, **kwargs)

        return traced

    return decorate


def name_operation(label: str, op_type: str) -> None:
    """Names the current server span after the GraphQL operation (`query OrderList`) and
    records its name and type: never its variables or document."""
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{op_type} {label}")
        current.set_attributes({"graphql.operation.name": label, "graphql.operation.type": op_type})


@contextlib.contextmanager
def operation_span(label: str, op_type: str) -> Iterator[None]:
    """The GraphQL operation: one span per operation, none per field."""
    with _tracer.start_as_current_span(
        f"{op_type} {label}",
        attributes={"graphql.operation.name": label, "graphql.operation.type": op_type},
    ):
        yield


@contextlib.contextmanager
def statement_span(system: str, text: str) -> Iterator[None]:
    """One database statement run by models/sql.py (SQLite's and PostgreSQL's: spans of
    our own rather than the asyncpg instrumentation's, docs/operations.md says why), made
    only inside a recorded trace. The text has placeholders only: values are bound. None
    inside `quiet()`, as the instrumentations."""
    if not active():
        yield
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        f"{system} {text.split(None, 1)[0] if text else 'statement'}",
        kind=SpanKind.CLIENT,
        attributes={"db.system": system, "db.statement": text},
    ):
        yield


def redis(call: Awaitable[R], command: str) -> Awaitable[R]:
    """A Redis call of infra/ (`await tracing.redis(client.get(key), "GET")`), in a span
    of its own inside a recorded trace; otherwise the call itself, untouched (one flag
    read). The span has the command's name only: never a key or an argument."""
    if not ENABLED or _get_value(_suppress_key):
        return call
    return _redis_span(call, command)


async def _redis_span(call: Awaitable[R], command: str) -> R:
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        command,
        kind=SpanKind.CLIENT,
        attributes={"db.system": "redis", "db.operation.name": command},
    ):
        return await call


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No spans inside (a background loop's polling, which would otherwise start a trace
    of its own every second): our hooks see `active()` false, httpx's instrumentation is
    suppressed."""
    if not ENABLED:
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield


# --- the broker envelope ---------------------------------------------------------------


@contextlib.contextmanager
def publish_span(
    channel: str, *, relay: bool, event_id: int | None = None
) -> Iterator[Callable[[bytes], bytes]]:
    """A span for one published message; yields what wraps the message in its envelope
    (the span's `traceparent` before the event's fields). The relay's publishes run in a
    context of their own, out of its polling's `quiet()`."""
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind

    if not relay and not active():
        # An unsampled request: no span, but the subscribers learn that its trace is not
        # sampled (flags 00) and make none either.
        yield functools.partial(_envelope, _traceparent(trace.get_current_span()))
        return
    parent = context.Context() if relay else None
    with _tracer.start_as_current_span(
        "events.publish", context=parent, kind=SpanKind.PRODUCER
    ) as current:
        token = context.attach(trace.set_span_in_context(current, context.Context()))
        try:
            if current.is_recording():
                current.set_attribute("messaging.destination.name", channel)
                current.set_attribute("messaging.operation", "publish")
                if event_id is not None:  # the outbox row: finds the webhook's trace
                    current.set_attribute("messaging.message.id", str(event_id))
                if relay:
                    current.set_attribute("order_service.relay", True)
            yield functools.partial(_envelope, _traceparent(current))
        finally:
            context.detach(token)


def _traceparent(current: Any) -> str:
    ctx = current.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _envelope(traceparent: str, message: bytes) -> bytes:
    if not message.startswith(b"{") or len(message) < 2:
        return message
    sep = b"" if message[1:2] == b"}" else b","
    return ENVELOPE_PREFIX + traceparent.encode() + b'"' + sep + message[1:]


def envelope_traceparent(message: bytes) -> str | None:
    """The `traceparent` a broker message carries, if any (no JSON parsing)."""
    if not message.startswith(ENVELOPE_PREFIX):
        return None
    start = len(ENVELOPE_PREFIX)
    value = message[start : start + _TRACEPARENT_LEN]
    if message[start + _TRACEPARENT_LEN : start + _TRACEPARENT_LEN + 1] != b'"':
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


@contextlib.contextmanager
def consume_span(message: bytes, channel: str) -> Iterator[None]:
    """A subscriber feed taking one message: the child of the span that published it."""
    from opentelemetry import context
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    traceparent = envelope_traceparent(message)
    if traceparent is not None and traceparent[-1] in "02468ace":
        # The publisher's trace is not sampled (the flags' low bit clear: `-00`, or `-02`
        # with the SDK's random-trace-id bit): nothing to record.
        yield
        return
    parent = (
        TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        if traceparent
        else context.Context()
    )
    with _tracer.start_as_current_span(
        "events.deliver", context=parent, kind=SpanKind.CONSUMER
    ) as current:
        if current.is_recording():
            current.set_attribute("messaging.destination.name", channel)
            current.set_attribute("messaging.operation", "process")
        yield
