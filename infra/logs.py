"""Logging: one readable line per event, or one JSON object per line (LOG_FORMAT=json).

Secrets never reach the log: our code does not log variables, headers or bodies; the
libraries that could (SQLAlchemy's statement log, websocket frames, HTTP clients) are held
at WARNING whatever LOG_LEVEL says; and every formatted line, tracebacks included, is
scrubbed of bearer tokens, JWTs, bcrypt hashes and `password=...`-like values.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

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
        if record.exc_info:
            data["exc_info"] = redact(self.formatException(record.exc_info))
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
        return redact(line)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    # Neither format shows the caller's file and line, thread or process: not looking
    # them up for every record (a walk up the stack, three lookups) is the logging
    # HOWTO's own advice for a line logged on every request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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
