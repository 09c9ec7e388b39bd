"""Finished spans as an OTLP `ExportTraceServiceRequest`, the protobuf bytes written here.

Why: the OTLP/HTTP exporter's own encoder (`encode_spans` of
opentelemetry-exporter-otlp-proto-common) builds the request as protobuf message objects,
one Python call per field: a key-value pair is two messages, a span a dozen or more. That
was about 16 µs a span of ours on the batch processor's thread, where a sampled
`{ __typename }` (two spans) cost that thread 39 µs in all (docs/benchmarks.md, "Tracing",
fifth round). The wire format of these few messages is simple and fixed
(opentelemetry-proto's trace.proto and common.proto, proto3), so they are written
directly: about 4 µs a span.

What is written is the stock encoder's request, field for field: the same grouping (by
resource, then instrumentation scope, in the order met), the same fields left out (proto3
defaults; a oneof value and a message that is set are written even when empty), an
attribute of a type OTLP has no value for logged and skipped as there.
tests/test_otlp_encoding.py parses both with the proto classes and compares them.

`install()` puts this encoder in the exporter's place (its module's `encode_spans`, the
one name the exporter calls: an internal, kept behind FAST_PATHS with the stock encoder
as its twin; docs/changing.md, "Library internals we use")."""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]
_MASK64 = (1 << 64) - 1

# Span flags (trace.proto's SpanFlags): whether the parent was remote is known (always,
# from the SDK's spans) and, if so, whether it was.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


# --- common.proto ------------------------------------------------------------------------


def _any_value(value: Any) -> bytes:
    """An `AnyValue`'s fields (a oneof: written even when it is the type's default)."""
    if value is None:
        return b""
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"{value} does not fit in an int64")
        return b"\x18" + _varint(value & _MASK64)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


# An attribute's encoded field already met, by (field tag, key, value's type, value): a
# service's spans repeat a few dozen of them (a route, an operation's name, a statement's
# text) in every trace. Strings, ints and bools only (a float's -0.0 equals 0.0; the type
# keeps True apart from 1); forgotten all at once past _MEMO_BYTES.
_memo: dict[tuple[bytes, str, type, Any], bytes] = {}
_memo_bytes = 0
_MEMO_BYTES = 1 << 20
_MEMO_TYPES = frozenset((str, int, bool))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a `KeyValue` field under `tag`; one OTLP cannot carry is logged
    and left out, as the stock encoder does."""
    global _memo_bytes
    if not attributes:
        return b""
    parts = []
    memo = _memo
    for key, value in attributes.items():
        kind = value.__class__
        if kind in _MEMO_TYPES:
            memo_key = (tag, key, kind, value)
            encoded = memo.get(memo_key)
            if encoded is not None:
                parts.append(encoded)
                continue
        try:
            encoded = _field(tag, _key_value(key, value))
        except Exception as error:
            log.exception("Failed to encode key %s: %s", key, error)
            continue
        if kind in _MEMO_TYPES:
            if _memo_bytes > _MEMO_BYTES:
                memo.clear()
                _memo_bytes = 0
            memo[memo_key] = encoded
            _memo_bytes += 2 * len(encoded) + 100
        parts.append(encoded)
    return b"".join(parts)


def _scope(scope: Any) -> bytes:
    """An `InstrumentationScope`'s fields (empty without a scope)."""
    if scope is None:
        return b""
    out = b""
    if scope.name:
        out += _field(b"\x0a", scope.name.encode())
    if scope.version:
        out += _field(b"\x12", scope.version.encode())
    return out + _attributes(b"\x1a", scope.attributes)


# --- trace.proto ---------------------------------------------------------------------------


# The span's `kind` field (SPAN_KIND_INTERNAL is 1, the API's INTERNAL 0), and its
# `flags` field (16, fixed32) for a local and a remote parent.
_KINDS: dict[Any, bytes] = {}
_FLAGS_LOCAL = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _flags(parent: Any) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _pack_fixed32(flags)


def _trace_state(trace_state: Any) -> str:
    if trace_state is None:
        return ""
    return ",".join(f"{key}={value}" for key, value in trace_state.items())


def _event(event: Any) -> bytes:
    out = b""
    if event.timestamp:
        out += b"\x09" + _pack_fixed64(event.timestamp)
    if event.name:
        out += _field(b"\x12", event.name.encode())
    out += _attributes(b"\x1a", event.attributes)
    if event.dropped_attributes:
        out += b"\x20" + _varint(event.dropped_attributes)
    return out


def _link(link: Any) -> bytes:
    context = link.context
    out = b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
    out += b"\x12\x08" + context.span_id.to_bytes(8, "big")
    out += _attributes(b"\x22", link.attributes)
    if link.dropped_attributes:
        out += b"\x28" + _varint(link.dropped_attributes)
    return out + b"\x35" + _flags(context)


def _fields(span: Any) -> tuple[Any, ...]:
    """What a span's record holds: read from the SDK's `ReadableSpan` fields directly
    (its properties copy the events and links into new tuples, the attributes into a
    mapping proxy, for every span); through the properties for another kind of span."""
    try:
        return (
            span._context,
            span._parent,
            span._name,
            span._kind,
            span._start_time,
            span._end_time,
            span._attributes,
            span._events,
            span._links,
            span._status,
        )
    except AttributeError:
        return (
            span.get_span_context(),
            span.parent,
            span.name,
            span.kind,
            span.start_time,
            span.end_time,
            span.attributes,
            span.events,
            span.links,
            span.status,
        )


def _span(span: Any) -> bytes:
    """A `Span`'s fields, in field order."""
    context, parent, name, kind, start, end, attributes, events, links, status = _fields(span)
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08"]
    parts.append(context.span_id.to_bytes(8, "big"))
    if context.trace_state and (trace_state := _trace_state(context.trace_state)):
        parts.append(_field(b"\x1a", trace_state.encode()))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if name:
        parts.append(_field(b"\x2a", name.encode()))
    parts.append(_KINDS[kind])
    if start:
        parts.append(b"\x39" + _pack_fixed64(start))
    if end:
        parts.append(b"\x41" + _pack_fixed64(end))
    if attributes:
        parts.append(_attributes(b"\x4a", attributes))
    if dropped := span.dropped_attributes:
        parts.append(b"\x50" + _varint(dropped))
    if events:
        for event in events:
            parts.append(_field(b"\x5a", _event(event)))
        if dropped := span.dropped_events:
            parts.append(b"\x60" + _varint(dropped))
    if links:
        for link in links:
            parts.append(_field(b"\x6a", _link(link)))
        if dropped := span.dropped_links:
            parts.append(b"\x70" + _varint(dropped))
    if status is not None:
        if status.description or status.status_code.value:
            fields = b""
            if status.description:
                fields += _field(b"\x12", status.description.encode())
            if status.status_code.value:
                fields += b"\x18" + _varint(status.status_code.value)
            parts.append(_field(b"\x7a", fields))
        else:
            parts.append(b"\x7a\x00")
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def encode(spans: Sequence[Any]) -> bytes:
    """`ExportTraceServiceRequest` bytes of `spans` (the SDK's `ReadableSpan`s)."""
    if not _KINDS:
        from opentelemetry.trace import SpanKind

        _KINDS.update((kind, b"\x30" + _SMALL[kind.value + 1]) for kind in SpanKind)
    grouped: dict[Any, dict[Any, list[bytes]]] = {}
    for span in spans:
        by_scope = grouped.setdefault(span.resource, {})
        by_scope.setdefault(span.instrumentation_scope or None, []).append(
            _field(b"\x12", _span(span))
        )
    out = []
    for resource, by_scope in grouped.items():
        body = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        for scope, encoded in by_scope.items():
            scope_spans = _field(b"\x0a", _scope(scope)) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_spans += _field(b"\x1a", scope.schema_url.encode())
            body += _field(b"\x12", scope_spans)
        if resource.schema_url:
            body += _field(b"\x1a", resource.schema_url.encode())
        out.append(_field(b"\x0a", body))
    return b"".join(out)


class _Request:
    """What the exporter does with the stock encoder's message: serialize it."""

    __slots__ = ("_spans",)

    def __init__(self, spans: Sequence[Any]) -> None:
        self._spans = spans

    def SerializePartialToString(self) -> bytes:  # the protobuf method's name
        return encode(self._spans)


def _encode_spans(spans: Sequence[Any]) -> _Request:
    return _Request(spans)


_stock: Any = None


def install() -> None:
    """This encoder in the OTLP/HTTP span exporter's place (the exporter's module calls
    `encode_spans(spans).SerializePartialToString()`); nothing without that exporter."""
    global _stock
    try:
        from opentelemetry.exporter.otlp.proto.http import trace_exporter
    except ImportError:
        return
    current = getattr(trace_exporter, "encode_spans", None)
    if current is not None and current is not _encode_spans:
        _stock = current
        trace_exporter.encode_spans = _encode_spans  # type: ignore[assignment]  # its one use


def uninstall() -> None:
    """The exporter's own encoder back (FAST_PATHS=off, or tracing turned off)."""
    global _stock
    if _stock is None:
        return
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    trace_exporter.encode_spans = _stock
    _stock = None
