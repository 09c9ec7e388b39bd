"""OpenTelemetry tracing: off unless the standard OTEL_* variables ask for it.

Turned on by `configure_from_env()` (server/app.py, once per process) when
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (or
OTEL_TRACES_EXPORTER names an exporter), and OTEL_SDK_DISABLED is not true. The SDK reads
the rest itself: OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the
default here is `parentbased_traceidratio` at 0.1), OTEL_EXPORTER_OTLP_* for the exporter.
The packages come with the `otel` extra (`pip install "order-service[otel]"`); without them
the variables are reported once and ignored.

While off, every hook costs one module attribute read (`tracing.ENABLED`) and nothing
else: the instrumentations are not installed, no span or context is made.

Trace layout (docs/operations.md, "Traces"): the server span (`begin_request`, called by
the request middleware; an incoming `traceparent` is continued) > the GraphQL operation
span (`query OrderList`: the operation's name and type, never its variables) > the use case
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

from infra import otlp

log = logging.getLogger("order_service.tracing")

# Read by every hook: the only cost while tracing is off.
ENABLED = False

_tracer: Any = None
_provider: Any = None
# Spans of our own inside a recorded trace (`_light_span_class`): the class, and what each
# needs from the provider. None while off, or when the sampler is not one whose decision
# for the child of a sampled span is known (`root_bound`): then the SDK makes every span.
_Light: Any = None
# Bound by `enable()` (opentelemetry.trace's and .context's; the last six are what
# `begin_request` makes spans and contexts with).
_SpanKind: Any = None
_SpanContext: Any = None
_detach: Any = None
_Context: Any = None
_propagator: Any = None
_server_kind: Any = None
_sampled_flags: Any = None
_set_span_in_context: Any = None
_set_value: Any = None
# The API's key of the current span in a context (`trace.propagation._SPAN_KEY`; with
# FAST_PATHS on only).
_span_key: Any = None
# The current context with a span made current in it (`_Current`): a dict copy with the
# span under the API's key (FAST_PATHS=on), or the API's `set_span_in_context`.
_with_span: Any = None
_instrumentors: list[Any] = []
# The provider's id generator, wrapped (`_Ids`), and the root sampler's bound on a trace
# id's low 64 bits when `begin_request` can take the sampling decision of a new trace itself
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


# Bound by `enable()`: read on every request, not imported there. `_current_context` is
# the SDK's context variable's `get` (its runtime context keeps it in `_current_context`):
# one call where `context.get_value` takes three; `context.get_current` if that moves.
_current_context: Any = None
_suppress_key: Any = None
_current_span: Any = None
# Set and reset the SDK's context variable directly (its `set` and `reset`: what
# `context.attach` and `detach` do, without their two calls and the `try` each); the API's
# functions if the runtime context is another.
_set_context: Any = None
_reset_context: Any = None
# The key under which an unsampled new trace's context holds its id, formatted once
# (`begin_request`): what the request id and the log lines read. That context
# holds no span: nothing made there would be recorded (the instrumentations are
# suppressed), and an OpenTelemetry span and span context are about 1.5 µs to make.
_TRACE_HEX_KEY = "order_service.unsampled_trace_id"
# The flags byte of such a trace's `traceparent` (`publish_span`): not sampled, and the
# W3C random-trace-id bit when the id generator's ids are random.
_unsampled_flags = "00"


def active() -> bool:
    """Tracing is on and the current trace is recorded: not an unsampled request, whose
    spans would all be dropped (`begin_request` suppresses the instrumentations for those),
    nor a `quiet()` block. Spans of our own are made only then."""
    return ENABLED and not _current_context().get(_suppress_key)


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


def configure_from_env(*, fast_paths: bool = True) -> bool:
    """Turn tracing on when the environment asks for it (once per process); whether on.
    `fast_paths`: see `enable`."""
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
    provider = TracerProvider(
        resource=resource_with_cached_hash(Resource.create()), sampler=_get_from_env_or_default()
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter_from_env()))
    enable(provider, fast_paths=fast_paths)
    # FAST_PATHS=on: the OTLP exporter's request written by infra/otlp.py rather than built
    # as protobuf message objects (its docstring says why); off, the exporter's own encoder.
    # After `enable`: it starts with `disable()`, which puts the exporter's encoder back.
    if fast_paths:
        otlp.install()
    log.info(
        "tracing on: service %s, sampler %s %s",
        os.environ["OTEL_SERVICE_NAME"],
        os.environ["OTEL_TRACES_SAMPLER"],
        os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""),
    )
    return True


def resource_with_cached_hash(resource: Any) -> Any:
    """`resource`, hashed once. The OTLP encoder groups every span it exports by its
    resource, a dict key: the SDK's `Resource.__hash__` dumps the attributes to JSON for
    each span (about 5 µs, on the batch processor's thread). A resource never changes
    once made (its attributes are immutable), so neither does the hash."""
    from opentelemetry.sdk.resources import Resource

    class _HashedResource(Resource):
        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    return _HashedResource(resource.attributes, resource.schema_url)


def _exporter_from_env() -> Any:
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # OTLP over HTTP/protobuf (port 4318): endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def enable(provider: Any, *, fast_paths: bool = True) -> None:
    """Trace through `provider` (tests pass one with an in-memory exporter): our spans
    (httpx's instrumentation: per client, `instrument_httpx`).

    `fast_paths` (Settings.fast_paths) reaches past OpenTelemetry's public API: the SDK's
    context variable set and reset directly, the current span's key, the root sampler's
    ratio decided here for a new trace (`begin_request`), spans of our own under a recorded
    one (`_light_span_class`), put straight on the batch processor's queue. Off, the stock
    twin: `context.attach`/`detach`, `set_span_in_context`, `get_current_span`, the SDK's
    spans, sampler and span processor chain for every span (docs/changing.md, "Library
    internals we use")."""
    global ENABLED, _tracer, _provider, _current_context, _suppress_key, _current_span
    global _set_context, _reset_context, _unsampled_flags
    global _Light, _SpanKind, _SpanContext, _detach, _with_span
    global _Context, _propagator, _server_kind, _sampled_flags, _set_span_in_context
    global _set_value, _span_key
    from opentelemetry import context
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
    from opentelemetry.trace import (
        INVALID_SPAN,
        SpanContext,
        SpanKind,
        TraceFlags,
        get_current_span,
        set_span_in_context,
    )
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    global _ids, _root_bound
    disable()
    _SpanKind, _SpanContext = SpanKind, SpanContext
    _Context, _server_kind = context.Context, SpanKind.SERVER
    _propagator = TraceContextTextMapPropagator()
    _set_span_in_context, _set_value = set_span_in_context, context.set_value
    _detach = context.detach
    variable = (
        getattr(getattr(context, "_RUNTIME_CONTEXT", None), "_current_context", None)
        if fast_paths
        else None
    )
    _current_context = variable.get if variable is not None else context.get_current
    _set_context = variable.set if variable is not None else context.attach
    _reset_context = variable.reset if variable is not None else context.detach
    _suppress_key = _SUPPRESS_INSTRUMENTATION_KEY
    if variable is not None:
        from opentelemetry.trace.propagation import _SPAN_KEY

        _span_key = _SPAN_KEY
        get, key, make = variable.get, _SPAN_KEY, context.Context
        _with_span = lambda span: make({**get(), key: span})  # noqa: E731
        # `get_current_span` without its four calls: only spans are put under the key.
        _current_span = lambda: get().get(key, INVALID_SPAN)  # noqa: E731
    else:
        _with_span, _current_span = set_span_in_context, get_current_span
    _provider = provider
    _root_bound = root_bound(provider.sampler) if fast_paths else None
    # Before any tracer is made: each tracer keeps the generator it was given.
    _ids = provider.id_generator = _Ids(provider.id_generator)
    _unsampled_flags = "02" if _ids.is_trace_id_random() else "00"
    random = TraceFlags.RANDOM_TRACE_ID if _ids.is_trace_id_random() else 0
    _sampled_flags = TraceFlags(random | TraceFlags.SAMPLED)
    _tracer = provider.get_tracer("order_service")
    processor = getattr(provider, "_active_span_processor", None)
    if _root_bound is not None and processor is not None and keeps_children(provider.sampler):
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        _Light = _light_span_class(
            processor, provider.resource, InstrumentationScope("order_service")
        )
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


def keeps_children(sampler: Any) -> bool:
    """Whether `sampler` keeps every child of a recorded span: a ratio or static sampler
    (the same decision for every span of a trace: it depends on the trace id only), or a
    ParentBased one whose child-of-a-sampled-local-parent sampler is `always_on` (the
    default, and what the OTEL_TRACES_SAMPLER values make)."""
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler

    if not isinstance(sampler, ParentBased):
        return True
    # ParentBased keeps it in `_local_parent_sampled` (no public accessor).
    child = getattr(sampler, "_local_parent_sampled", None)
    return isinstance(child, StaticSampler) and child._decision is Decision.RECORD_AND_SAMPLE


class _Ids:
    """The provider's id generator, which hands out once the trace id `begin_request` drew
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
    global ENABLED, _tracer, _provider, _ids, _root_bound, _Light
    ENABLED = False
    _Light = None
    if _provider is not None and isinstance(_provider.id_generator, _Ids):
        _provider.id_generator = _provider.id_generator.inner
    _ids, _root_bound = None, None
    for instrumentor in _instrumentors:
        instrumentor.uninstrument()
    _instrumentors.clear()
    _tracer = _provider = None
    otlp.uninstall()


def shutdown() -> None:
    """Send what is buffered (at the end of the process's lifespan)."""
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.force_flush(timeout_millis=5000)


# --- the request's edge ----------------------------------------------------------------
#
# The server span is made by the request middleware itself (server/middleware.py,
# `RequestContextMiddleware`): `begin_request` when a request comes in, `end_request` once
# it is answered and logged. One ASGI layer for the request id, the access log and the
# span: a layer of its own cost a coroutine, a wrapped `send` and a second walk of the
# headers on every request, sampled or not (docs/benchmarks.md, "Tracing", sixth round).

EXCLUDED_PATHS = frozenset(("/health", "/ready", "/metrics"))


def begin_request(scope: Any, route_of: Callable[[str], str]) -> tuple[Any, Any, str] | None:
    """The server span of an HTTP request (`POST /graphql`), continuing an incoming
    `traceparent`, made the current context: (the token `end_request` resets, the span or
    None when the trace is not recorded, the trace id in 32 hex digits: the request id).
    None while tracing is off and for probes and scrapes (`EXCLUDED_PATHS`). Websockets
    get none: a span would last as long as the connection.

    Our own, not the maintained ASGI instrumentation's: that one collects a dozen
    attributes and records two histograms on every request, sampled or not, for about
    95 µs of CPU (a fifth of a trivial query; docs/benchmarks.md, "Tracing"). Here an
    unsampled new trace costs the sampling decision and one context switch, and runs with
    the instrumentations suppressed: its spans would be dropped anyway. Its trace id still
    names it (request id, log lines)."""
    path = scope["path"]
    if not ENABLED or path in EXCLUDED_PATHS:
        return None
    carrier: dict[str, str] | None = None
    for name, value in scope.get("headers") or ():
        if name == b"traceparent" or name == b"tracestate":
            if carrier is None:
                carrier = {}
            carrier[name.decode()] = value.decode("latin-1")
    bound = _root_bound
    if carrier is None and bound is not None:
        # A new trace: the root sampler's decision taken here, on the id the SDK would
        # draw. 9 in 10 requests (at 10%) stop at this: no span object of the SDK's.
        trace_id = _ids.inner.generate_trace_id()
        if trace_id & _TRACE_ID_LOW >= bound:
            # No span in this context, not even a NonRecordingSpan: nothing below would
            # record one, and making it (a span context with a fresh span id) cost more
            # than the rest of this path. About 1 µs where `start_span` takes about 13.
            # 16 bytes in hex: the same 32 digits as `f"{trace_id:032x}"`, a third of the
            # instructions (no format specification to parse).
            trace_hex = trace_id.to_bytes(16, "big").hex()
            token = _set_context(_Context({_TRACE_HEX_KEY: trace_hex, _suppress_key: True}))
            return token, None, trace_hex
    else:
        trace_id = 0
    method = scope["method"]
    name = f"{method} {route_of(path)}"
    attributes = {
        "http.request.method": method,
        "url.path": path,
        "url.scheme": scope.get("scheme", "http"),
    }
    if trace_id and _Light is not None:
        # Sampled here: the root span is one of ours (`_light_span_class`), as its
        # children will be, in a context of its own (the request's is empty).
        span = _Light(
            name,
            _SpanContext(trace_id, _ids.generate_span_id(), False, _sampled_flags),
            None,
            _server_kind,
            attributes,
        )
        token = _set_context(_Context({_span_key: span}))
        return token, span, trace_id.to_bytes(16, "big").hex()
    parent = _propagator.extract(carrier) if carrier else _Context()
    _ids.next_trace_id = trace_id  # taken by the SDK's start_span just below
    span = _tracer.start_span(name, context=parent, kind=_server_kind, attributes=attributes)
    _ids.next_trace_id = 0
    ctx = _set_span_in_context(span, parent)
    recording = span.is_recording()
    if not recording:
        ctx = _set_value(_suppress_key, True, ctx)
    token = _set_context(ctx)
    return token, span if recording else None, f"{span.get_span_context().trace_id:032x}"


def end_request(
    begun: tuple[Any, Any, str], status: int, error: BaseException | None = None
) -> None:
    """The request answered with `status` (or failed with `error` before it could be):
    its span ended, the context before `begin_request` current again."""
    token, span, _ = begun
    try:
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.record_exception(error)
            if status >= 500:
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR))
    finally:
        _reset_context(token)
        if span is not None:
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
    unsampled = _current_context().get(_TRACE_HEX_KEY)
    if unsampled is not None:
        return unsampled  # a str: `begin_request`
    trace_id = _current_span().get_span_context().trace_id
    return format(trace_id, "032x") if trace_id else None


# --- spans of our own, inside a recorded trace -------------------------------------------


def _light_span_class(processor: Any, resource: Any, scope: Any) -> Any:
    """The class of the spans `_child` makes under a recorded span (and `begin_request` for
    a new trace it samples itself): a span and its exported record in one object, handed
    to the provider's span processors (`processor`, its `_active_span_processor`) when it
    ends, as the SDK's are.

    Why: in the service, the SDK's `start_span` and `end` cost 50 to 70 µs of CPU a span
    (the sampler asked again for each child, every attribute validated and copied into a
    locked `BoundedAttributes`, a lock per span and per event list, a `ReadableSpan` copy
    made at the end, the span limits), where a sampled trace's children need none of it:
    the decision is the parent's (`root_bound` says the sampler is one that keeps the
    children of a sampled span), and the attributes are ours, strings, numbers and
    booleans set by this module. What the exporter reads (`ReadableSpan`'s properties) is
    the same. The SDK still makes the spans of the instrumentations (httpx), of an
    incoming `traceparent`'s trace and of the relay's and subscribers' traces.

    While the provider's only processor is the SDK's `BatchSpanProcessor` (what
    `configure_from_env` sets up), a span goes straight to its queue (`emit`, the batch
    processor's own, with its fork, shutdown and queue-full checks) and no `on_start` is
    called: the batch processor's does nothing, and its `on_end` only checks the sampled
    flag that every span of ours has. Seven calls a span fewer. A processor added later
    puts every span back on the provider's chain."""
    from time import time_ns

    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace import Span as SDKSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Span, Status, StatusCode

    unset = Status(StatusCode.UNSET)
    # The processors the shortcut was chosen for, and the batch queue's `emit`; None (the
    # provider's chain for every span) with any other processor, or another SDK's layout.
    only_batch = getattr(processor, "_span_processors", None)
    emit = None
    if (
        isinstance(only_batch, tuple)
        and len(only_batch) == 1
        and type(only_batch[0]) is BatchSpanProcessor
    ):
        emit = getattr(getattr(only_batch[0], "_batch_processor", None), "emit", None)
    if emit is None:
        only_batch = None

    class LightSpan(Span, ReadableSpan):
        def __init__(
            self, name: str, context: Any, parent: Any, kind: Any, attributes: Any
        ) -> None:
            self._name = name
            self._context = context
            self._parent = parent
            self._kind = kind
            self._attributes = dict(attributes) if attributes else {}
            self._events: Any = ()  # a list once there is an event (`add_event`)
            self._links = ()
            self._status = unset
            self._resource = resource
            self._instrumentation_scope = scope
            self._instrumentation_info = None
            self._end_time = None
            self._start_time = time_ns()
            if only_batch is None or processor._span_processors is not only_batch:
                processor.on_start(self, parent_context=None)

        def get_span_context(self) -> Any:
            return self._context

        def is_recording(self) -> bool:
            return self._end_time is None

        def set_attribute(self, key: str, value: Any) -> None:
            if self._end_time is None:
                self._attributes[key] = value  # type: ignore[index]  # our dict

        def set_attributes(self, attributes: Any) -> None:
            if self._end_time is None:
                self._attributes.update(attributes)  # type: ignore[union-attr]  # our dict

        def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
            if self._end_time is None:
                self._events = [*self._events, Event(name, attributes, timestamp)]

        def update_name(self, name: str) -> None:
            if self._end_time is None:
                self._name = name

        def set_status(self, status: Any, description: str | None = None) -> None:
            if self._end_time is not None or self._status.status_code is StatusCode.OK:
                return
            if not isinstance(status, Status):
                status = Status(status, description)
            if status.status_code is not StatusCode.UNSET:
                self._status = status

        # The SDK's own (its attributes: exception type, message, stack trace).
        record_exception = SDKSpan.record_exception

        def end(self, end_time: int | None = None) -> None:
            if self._end_time is None:
                self._end_time = end_time or time_ns()
                if only_batch is not None and processor._span_processors is only_batch:
                    emit(self)  # type: ignore[misc]  # set with only_batch
                else:
                    processor.on_end(self)

    return LightSpan


def _child(name: str, kind: Any, attributes: Mapping[str, Any] | None = None) -> Any:
    """A span under the current one, not yet made current: ours (`_light_span_class`)
    when the current span is recorded and the sampler keeps its children; the SDK's
    otherwise (which asks the sampler)."""
    parent = _current_span()
    if _Light is not None and parent.is_recording():
        ctx = parent.get_span_context()
        return _Light(
            name,
            _SpanContext(
                ctx.trace_id, _ids.generate_span_id(), False, ctx.trace_flags, ctx.trace_state
            ),
            ctx,
            kind,
            attributes,
        )
    return _tracer.start_span(name, kind=kind, attributes=attributes)


class _Current:
    """`span` made the current span inside, ended after: `start_as_current_span`'s work
    without its two generator-based context managers. An exception is recorded on it
    (and its status set) as `use_span` does: exceptions only, not a cancellation."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span

    def __enter__(self) -> Any:
        # `set_span_in_context` and `attach` (FAST_PATHS=on: without their four calls,
        # the current context with the span in it, set in the SDK's context variable).
        self._token = _set_context(_with_span(self._span))
        return self._span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        try:
            if isinstance(exc, Exception) and span.is_recording():
                _record_error(span, exc)
        finally:
            try:
                _reset_context(self._token)
            except ValueError:  # left in another context than it was entered: `detach` too
                _detach(self._token)
            span.end()


def _record_error(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


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
    with _Current(_child(name, _SpanKind[kind], attributes)) as current:
        yield current


def use_case(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorates a use case (a coroutine function of resolvers/) with a span of its name."""
    span_name = f"use_case {name}"

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            if not active():
                return await fn(*args, **kwargs)
            with _Current(_child(span_name, _SpanKind.INTERNAL)):
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


def operation_span(label: str, op_type: str) -> contextlib.AbstractContextManager[Any]:
    """The GraphQL operation: one span per operation, none per field."""
    return _Current(
        _child(
            f"{op_type} {label}",
            _SpanKind.INTERNAL,
            {"graphql.operation.name": label, "graphql.operation.type": op_type},
        )
    )


def statement_span(system: str, text: str) -> contextlib.AbstractContextManager[Any]:
    """One database statement run by models/sql.py (SQLite's and PostgreSQL's: spans of
    our own rather than the asyncpg instrumentation's, docs/operations.md says why), made
    only inside a recorded trace. The text has placeholders only: values are bound. None
    inside `quiet()`, as the instrumentations."""
    if not active():
        return contextlib.nullcontext()
    return _Leaf(
        f"{system} {text.split(None, 1)[0] if text else 'statement'}",
        {"db.system": system, "db.statement": text},
    )


class _Leaf:
    """A CLIENT span with no child: a statement or a Redis command. Not made the current
    span (nothing runs inside it that could take it as a parent): no context switch in
    and out. An exception is recorded on it as `use_span` would."""

    __slots__ = ("_attributes", "_name", "_span")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> Any:
        self._span = _child(self._name, _SpanKind.CLIENT, self._attributes)
        return self._span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        # Exceptions only, as `use_span`: a cancellation is not the statement's error.
        if isinstance(exc, Exception) and span.is_recording():
            _record_error(span, exc)
        span.end()


def redis(call: Awaitable[R], command: str) -> Awaitable[R]:
    """A Redis call of infra/ (`await tracing.redis(client.get(key), "GET")`), in a span
    of its own inside a recorded trace; otherwise the call itself, untouched (one flag
    read). The span has the command's name only: never a key or an argument."""
    if not ENABLED or _current_context().get(_suppress_key):
        return call
    return _redis_span(call, command)


async def _redis_span(call: Awaitable[R], command: str) -> R:
    with _Leaf(command, {"db.system": "redis", "db.operation.name": command}):
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
    context of their own, out of its polling's `quiet()`.

    The broker's own command (Redis `PUBLISH`) gets no span inside it: this span is that
    call, the message's encoding aside, and a second one would double a sampled trace's
    cost for it and tell an operator nothing more."""
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind

    if not relay and not active():
        # An unsampled request: no span, but the subscribers learn that its trace is not
        # sampled (flags 00) and make none either.
        yield functools.partial(_envelope, _unsampled_traceparent())
        return
    attributes: dict[str, Any] = {
        "messaging.destination.name": channel,
        "messaging.operation": "publish",
    }
    if event_id is not None:  # the outbox row: finds the webhook's trace
        attributes["messaging.message.id"] = str(event_id)
    if relay:
        attributes["order_service.relay"] = True
    if relay:  # a new trace: the SDK's sampler decides
        current = _tracer.start_span(
            "events.publish",
            context=context.Context(),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
    else:
        current = _child("events.publish", SpanKind.PRODUCER, attributes)
    token = context.attach(
        context.set_value(
            _suppress_key, True, trace.set_span_in_context(current, context.Context())
        )
    )
    try:
        yield functools.partial(_envelope, _traceparent(current))
    except Exception as exc:
        if current.is_recording():
            _record_error(current, exc)
        raise
    finally:
        context.detach(token)
        current.end()


def _unsampled_traceparent() -> str:
    """The `traceparent` of the current unsampled trace: a new trace's
    (`begin_request`: its id, a fresh span id), or the current span's."""
    unsampled = _current_context().get(_TRACE_HEX_KEY)
    if unsampled is None:
        from opentelemetry import trace

        return _traceparent(trace.get_current_span())
    return f"00-{unsampled}-{_ids.generate_span_id():016x}-{_unsampled_flags}"


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
