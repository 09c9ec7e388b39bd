"""Logging: one readable line per event, or one JSON object per line (LOG_FORMAT=json).

Secrets never reach the log: our code does not log variables, headers or bodies; the
libraries that could (SQLAlchemy's statement log, websocket frames, HTTP clients) are held
at WARNING whatever LOG_LEVEL says; and every formatted line, tracebacks included, is
scrubbed of bearer tokens, JWTs, bcrypt hashes and `password=...`-like values.

A request's unexpected failure is logged through `failures` (`RepeatedFailures`): one
traceback per kind of failure and outage, then a count per interval, not a traceback per
request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from infra import tracing

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

# Loggers that print statements with their parameters, frames or headers at INFO/DEBUG.
_CHATTY = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "websockets",
    "uvicorn.protocols",
    "httpx",
    "httpcore",
    "hpack",
    "redis",
    "multipart",
)

_SECRETS = [
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 [REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    (re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}"), "[REDACTED-HASH]"),
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|token|authorization)\w*[\"']?\s*[:=]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s,;)}&]+)"
        ),
        r"\1[REDACTED]",
    ),
]


# Every pattern above needs one of these (lower-cased) to match: most lines (an access
# line a request) hold none, and skip the four regular expressions. Only for ASCII text:
# case-insensitive matching also equates a few other letters (U+0131, U+017F, U+212A)
# with ASCII ones.
_CLUES = ("bearer", "eyj", "$2", "passw", "secret", "token", "authorization")


def redact(text: str) -> str:
    """`text` without anything that looks like a credential."""
    if text.isascii():
        lowered = text.lower()
        if not any(clue in lowered for clue in _CLUES):
            return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                data[key] = redact(value) if isinstance(value, str) else value
        # The trace a line belongs to (its request's, or the relay's publishing).
        if tracing.ENABLED and "trace_id" not in data and (trace_id := tracing.current_trace_id()):
            data["trace_id"] = trace_id
        if record.exc_info:
            data["exc_info"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(data, default=str).decode()

    @staticmethod
    def format_fields(
        created: float, level: str, name: str, message: str, extra: dict[str, Any]
    ) -> str:
        """What `format` makes of a record with these fields and no exception."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(),
            "level": level,
            "logger": name,
            "message": redact(message),
        }
        for key, value in extra.items():
            data[key] = redact(value) if isinstance(value, str) else value
        if tracing.ENABLED and "trace_id" not in data and (trace_id := tracing.current_trace_id()):
            data["trace_id"] = trace_id
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record.__dict__
        for key in ("request_id", "operation", "client_ip"):
            if value := fields.get(key):
                line += f" {key}={value}"
        if tracing.ENABLED and (trace_id := tracing.current_trace_id()):
            line += f" trace_id={trace_id}"
        return redact(line)

    def format_fields(
        self, created: float, level: str, name: str, message: str, extra: dict[str, Any]
    ) -> str:
        """What `format` makes of a record with these fields and no exception (the default
        date format: this class sets none)."""
        line = f"{_asctime(created)} {level} {name}: {message}"
        for key in ("request_id", "operation", "client_ip"):
            if value := extra.get(key):
                line += f" {key}={value}"
        if tracing.ENABLED and (trace_id := tracing.current_trace_id()):
            line += f" trace_id={trace_id}"
        return redact(line)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    # Neither format shows the caller's file and line, thread or process: not looking
    # them up for every record (a walk up the stack, three lookups) is the logging
    # HOWTO's own advice for a line logged on every request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _installed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _installed = handler
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _CHATTY:
        chatty = logging.getLogger(name)
        chatty.setLevel(max(logging.WARNING, chatty.getEffectiveLevel()))
    # uvicorn's own access log would duplicate ours, without the request id.
    logging.getLogger("uvicorn.access").disabled = True


# --- the access line's quick way -----------------------------------------------------------

# The handler configure_logging installed on the root logger (None until it runs).
_installed: logging.StreamHandler[Any] | None = None
ACCESS_MESSAGE = "%s %s %s %.1fms"


def _asctime(created: float, _cache: dict[int, str] = {}) -> str:  # noqa: B006 - a cache
    """`Formatter.formatTime` of a record made at `created` (the default formats): the
    date and time looked up once a second."""
    second = int(created)
    prefix = _cache.get(second)
    if prefix is None:
        _cache.clear()
        prefix = _cache[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    # LogRecord's own msecs (gh-89047), and Formatter.default_msec_format.
    return "%s,%03d" % (prefix, int((created - second) * 1000) + 0.0)  # noqa: UP031


def _plain_route(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The installed handler, when an INFO record of `logger` would reach it and nothing
    else: no filter on the way, no other handler, nothing replaced since (a test's
    caplog, a library's handler). None: log through `logging` as usual."""
    handler = _installed
    if handler is None or handler.filters or handler.level > logging.INFO:
        return None
    if type(handler.formatter) not in (TextFormatter, JsonFormatter):
        return None
    if logger.disabled or not logger.isEnabledFor(logging.INFO):
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            if current.parent is not None or current.handlers != [handler]:
                return None
            return handler
        if not current.propagate:
            return None
        current = current.parent
    return None


def log_access(
    logger: logging.Logger,
    method: str,
    path: str,
    status: int,
    duration: float,
    extra: dict[str, Any],
) -> None:
    """`logger.info(ACCESS_MESSAGE, method, path, status, duration in ms, extra=extra)`,
    the line written as that call writes it. On the way every line of a request takes
    (the root logger's handler, our own formatter) the line is formatted here and written
    to the handler's stream at once: no LogRecord, no walk through the logging machinery,
    about 10 µs a request. Anything else, and any failure to write, goes through
    `logging` (tests/test_logging.py holds the two to the same bytes)."""
    args = (method, path, status, duration * 1000)
    handler = _plain_route(logger)
    if handler is not None:
        message = ACCESS_MESSAGE % args
        formatter = handler.formatter
        created = time.time()
        if type(formatter) is TextFormatter:
            line = formatter.format_fields(created, "INFO", logger.name, message, extra)
        else:
            line = JsonFormatter.format_fields(created, "INFO", logger.name, message, extra)
        try:
            with handler.lock:  # type: ignore[union-attr]
                handler.stream.write(line + handler.terminator)
                handler.flush()
            return
        except Exception:  # noqa: S110 - logging reports it (handleError) on the way below
            pass
    logger.info(ACCESS_MESSAGE, *args, extra=extra)


# --- repeated failures ---------------------------------------------------------------------

REPEAT_INTERVAL_SECONDS = 10.0
_SAMPLE_IDS = 5


@dataclass(slots=True)
class _Kind:
    logger: logging.Logger
    what: str
    name: str  # the exception's type (the exception is not kept: its frames would be)
    first_request_id: str | None
    window_start: float
    last_seen: float
    repeats: int = 0
    samples: list[str] = field(default_factory=list)
    flush_scheduled: bool = False


class RepeatedFailures:
    """One traceback per outage, not one per request.

    A failure is of the same kind as an earlier one when it is the same exception type,
    raised at the same place (the innermost frame of its traceback), reported to the same
    logger: a database outage fails every resolver at the same line of the driver.

    - The first failure of a kind is logged at ERROR with its traceback and request id.
    - A repeat within `interval` of the last one is one short INFO line, no traceback: the
      request id, and the request whose traceback it shares. An operator who has a user's
      `requestId` (the client gets its own in every masked error) finds that line, and from
      it the traceback; it costs what an access line costs, nothing like a traceback of
      forty lines, and sits below WARNING where alerts look.
    - Once per `interval` while a kind repeats, one ERROR line sums it up: "repeated N times
      in the last 10 s", with a few of the request ids. Alerts on ERROR see one line per
      interval for as long as an outage lasts, and the count says how bad it is.
    - A kind quiet for a whole interval is over: its next failure is logged with its
      traceback again (a new outage, or the same bug hit again later).

    The summary is written by a timer on the running event loop at the end of the
    interval (or, without a loop, by the next failure of the kind)."""

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1000,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.max_kinds = max_kinds
        self._kinds: dict[tuple[str, str, str, int], _Kind] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._kinds.clear()

    def report(
        self,
        logger: logging.Logger,
        what: str,
        where: str,
        exc: BaseException,
        *,
        request_id: str | None,
    ) -> None:
        """Logs `exc`, which failed request `request_id` in `where`, as "`what` in `where`"."""
        key = _kind_of(logger, exc)
        name = type(exc).__name__
        now = self.clock()
        extra = {"request_id": request_id}
        summary = None
        with self._lock:
            kind = self._kinds.get(key)
            repeat = kind is not None and now - kind.last_seen < self.interval
            if kind is not None and repeat:
                kind.last_seen = now
                kind.repeats += 1
                if request_id and len(kind.samples) < _SAMPLE_IDS:
                    kind.samples.append(request_id)
                first = kind.first_request_id
                if self._window_over(kind, now):
                    summary = self._take_summary(kind, now)
                schedule = summary is None and not kind.flush_scheduled
                kind.flush_scheduled = kind.flush_scheduled or schedule
                flush_in = kind.window_start + self.interval - now
            else:
                # A new kind, or one quiet for an interval: a new outage. What the last
                # one left uncounted (no timer ran) is summed up first.
                if kind is not None and kind.repeats:
                    summary = self._take_summary(kind, now)
                if kind is None and len(self._kinds) >= self.max_kinds:
                    self._forget_quiet(now)
                if kind is not None or len(self._kinds) < self.max_kinds:
                    self._kinds[key] = _Kind(logger, what, name, request_id, now, now)
        if not repeat:
            if summary is not None:
                self._emit(logger, what, name, *summary)
            logger.error(
                "%s in %s (request %s)",
                what,
                where,
                request_id,
                exc_info=(type(exc), exc, exc.__traceback__),
                extra=extra,
            )
            return
        logger.info(
            "%s in %s (request %s): %s again; traceback logged with request %s",
            what,
            where,
            request_id,
            name,
            first,
            extra={**extra, "repeat_of": first},
        )
        if summary is not None:
            self._emit(logger, what, name, *summary)
        elif schedule:
            self._schedule_flush(flush_in, key)

    def _window_over(self, kind: _Kind, now: float) -> bool:
        return now - kind.window_start >= self.interval

    def _take_summary(self, kind: _Kind, now: float) -> tuple[int, float, str | None, list[str]]:
        summary = (kind.repeats, now - kind.window_start, kind.first_request_id, kind.samples)
        kind.window_start, kind.repeats, kind.samples = now, 0, []
        kind.flush_scheduled = False
        return summary

    def _emit(
        self,
        logger: logging.Logger,
        what: str,
        name: str,
        repeats: int,
        seconds: float,
        first: str | None,
        samples: list[str],
    ) -> None:
        logger.error(
            "%s: %s repeated %d times in the last %.0f s (traceback logged with request %s; "
            "requests %s%s)",
            what,
            name,
            repeats,
            seconds,
            first,
            ", ".join(samples),
            ", ..." if repeats > len(samples) else "",
            extra={"repeated": repeats, "repeat_of": first, "request_ids": samples},
        )

    def _schedule_flush(self, delay: float, key: tuple[str, str, str, int]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next failure of the kind (or `flush`) writes the summary
        loop.call_later(max(0.0, delay), self._flush, key)

    def _flush(self, key: tuple[str, str, str, int]) -> None:
        with self._lock:
            kind = self._kinds.get(key)
            if kind is None or not kind.repeats:
                if kind is not None:
                    kind.flush_scheduled = False
                return
            summary = self._take_summary(kind, self.clock())
        self._emit(kind.logger, kind.what, kind.name, *summary)

    def flush(self) -> None:
        """Writes every count not written yet (at shutdown: nothing goes uncounted)."""
        for key in list(self._kinds):
            self._flush(key)

    def _forget_quiet(self, now: float) -> None:
        for key, kind in list(self._kinds.items()):
            if now - kind.last_seen >= self.interval and not kind.repeats:
                del self._kinds[key]


def _kind_of(logger: logging.Logger, exc: BaseException) -> tuple[str, str, str, int]:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ("", 0)
    kind = type(exc)
    return (logger.name, f"{kind.__module__}.{kind.__qualname__}", *where)


# Shared by every place that logs a request's unexpected failure (GraphQL, webhooks).
failures = RepeatedFailures()
