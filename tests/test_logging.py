"""Logs: one line per request with its id, operation and client address; never a
password, a token or a password hash, at any level, from any logger."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.logs import JsonFormatter, TextFormatter, configure_logging, redact
from server.middleware import client_ip
from tests.client import CREATE_ORDER, GraphQLClient
from tests.live import live_server

SECRET_PASSWORD = "Sup3r-Secret-Passw0rd"
WRONG_PASSWORD = "Wr0ng-Guess-Passw0rd"


def _post(url: str, query: str, variables: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, headers=headers
    )


def test_a_live_server_logs_requests_but_no_secrets(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    with live_server(env, tmp_path) as server:
        signup = _post(
            server.url,
            "mutation SignUp($i: SignupInput!) { signup(input: $i) { accessToken } }",
            {"i": {"email": "logged@example.com", "password": SECRET_PASSWORD}},
            **{"X-Request-ID": "req-signup-1"},
        )
        token = signup.json()["data"]["signup"]["accessToken"]
        assert signup.headers["x-request-id"] == "req-signup-1"
        login = "mutation LogIn($i: LoginInput!) { login(input: $i) { accessToken } }"
        good = _post(
            server.url, login, {"i": {"email": "logged@example.com", "password": SECRET_PASSWORD}}
        )
        login_token = good.json()["data"]["login"]["accessToken"]
        bad = _post(
            server.url,
            login,
            {"i": {"email": "logged@example.com", "password": WRONG_PASSWORD}},
            **{"X-Forwarded-For": "203.0.113.9"},
        )
        assert bad.json()["errors"][0]["extensions"]["code"] == "INVALID_CREDENTIALS"
        created = _post(
            server.url,
            CREATE_ORDER,
            {"input": {"items": [{"sku": "WIDGET-001", "qty": 1}], "clientToken": "log-1"}},
            Authorization=f"Bearer {token}",
        )
        assert created.json()["data"]["createOrder"]["status"] == "PENDING"
        # A literal password in the document itself, and a malformed one.
        _post(
            server.url,
            f'mutation {{ login(input: {{email: "x@y.z", password: "{SECRET_PASSWORD}"}}) {{ accessToken }} }}',
            {},
        )
        _post(server.url, f'mutation {{ login(input: {{password: "{SECRET_PASSWORD}" ', {})
        log = server.log()

    for secret in (SECRET_PASSWORD, WRONG_PASSWORD, token, login_token, token.split(".")[1]):
        assert secret not in log
    assert "$2b$" not in log
    access = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and '"order_service.access"' in line
    ]
    by_id = {a["request_id"]: a for a in access}
    first = by_id["req-signup-1"]
    assert first["operation"] == "SignUp"
    assert first["method"] == "POST" and first["path"] == "/graphql" and first["status"] == 200
    assert first["duration_ms"] > 0
    assert any(a["client_ip"] == "203.0.113.9" and a["operation"] == "LogIn" for a in access)
    assert any(a["operation"] == "Create" for a in access)
    assert len(access) >= 6


def test_the_text_format_is_one_readable_line(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord(
        "order_service.access", logging.INFO, "", 0, "POST /graphql 200 1.0ms", (), None
    )
    record.request_id, record.operation, record.client_ip = "abc", "Create", "192.0.2.1"
    line = TextFormatter().format(record)
    assert line.endswith(
        "POST /graphql 200 1.0ms request_id=abc operation=Create client_ip=192.0.2.1"
    )
    assert json.loads(JsonFormatter().format(record))["request_id"] == "abc"


async def test_access_lines_carry_the_request_id(
    client: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="order_service.access")
    response = await client.http.post(
        "/graphql",
        json={"query": "query Catalog { products { sku } }"},
        headers={"X-Request-ID": "abc-123"},
    )
    assert response.headers["x-request-id"] == "abc-123"
    [line] = [r for r in caplog.records if r.name == "order_service.access"]
    assert line.__dict__["request_id"] == "abc-123"
    assert line.__dict__["operation"] == "Catalog"
    # No id given (or an unusable one): one is made up, and echoed.
    generated = await client.http.post(
        "/graphql", json={"query": "{ products { sku } }"}, headers={"X-Request-ID": "bad id!"}
    )
    assert generated.headers["x-request-id"] != "bad id!"
    assert len(generated.headers["x-request-id"]) == 32


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = frozenset({"10.0.0.1"})

    def scope(peer: str, forwarded: str) -> dict[str, Any]:
        return {"client": (peer, 1), "headers": [(b"x-forwarded-for", forwarded.encode())]}

    assert client_ip(scope("10.0.0.1", "198.51.100.1"), trusted) == "198.51.100.1"
    assert (
        client_ip(scope("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.1"), trusted) == "198.51.100.1"
    )
    assert client_ip(scope("192.0.2.5", "198.51.100.1"), trusted) == "192.0.2.5"


def test_redaction_catches_what_libraries_might_print() -> None:
    samples = [
        "headers: [(b'authorization', b'Bearer abc.def.ghi')]",
        "variables={'input': {'email': 'a@b.c', 'password': 'hunter2 hunter2'}}",
        "[parameters: ('a@b.c', '$2b$04$" + "x" * 53 + "', 'USER')]",
        '{"accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"}',
    ]
    for sample in samples:
        cleaned = redact(sample)
        for secret in ("abc.def.ghi", "hunter2", "x" * 53, "eyJzdWIiOiIxIn0"):
            assert secret not in cleaned


def test_chatty_libraries_stay_quiet_at_debug() -> None:
    root = logging.getLogger()
    names = ("sqlalchemy.engine.Engine", "websockets.server", "httpcore", "aiosqlite")
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in (*names, "sqlalchemy", "websockets")}
    try:
        configure_logging("DEBUG", "json")
        for name in names:
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger("order_service.access").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
        logging.getLogger("uvicorn.access").disabled = False


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("at", [1765000000.0, 1765000000.9996, 1765012345.0421, 1700000000.5])
def test_the_quick_access_line_is_the_line_logging_writes(
    monkeypatch: pytest.MonkeyPatch, fmt: str, at: float
) -> None:
    """infra.logs.log_access writes the access line itself when it would only reach the
    installed handler: the same bytes as `logger.info` through logging (redaction, the
    time's milliseconds, the fields and their order), and logging again once anything
    else is on the way."""
    import io
    import time

    from infra import logs

    root = logging.getLogger()
    handlers, level, installed = root.handlers[:], root.level, logs._installed
    chatty = {name: logging.getLogger(name).level for name in logs._CHATTY}
    access = logging.getLogger("order_service.access")
    try:
        configure_logging("INFO", fmt)
        stream = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        monkeypatch.setattr(time, "time", lambda: at)
        monkeypatch.setattr(time, "time_ns", lambda: int(at * 1e9))
        extra = {
            "method": "POST",
            "path": "/graphql",
            "status": 200,
            "duration_ms": 12.35,
            "client_ip": "192.0.2.1",
            "request_id": "req-1",
            "operation": "Login password=hunter2",
        }
        assert logs._plain_route(access) is handler
        logs.log_access(access, "POST", "/graphql", 200, 0.012345, dict(extra))
        quick = stream.getvalue()
        stream.seek(0)
        stream.truncate()
        access.info(logs.ACCESS_MESSAGE, "POST", "/graphql", 200, 12.345, extra=dict(extra))
        assert quick == stream.getvalue()
        assert "hunter2" not in quick and quick.count("\n") == 1

        # A filter on the way (or another handler, as caplog adds): logging's own path.
        seen: list[logging.LogRecord] = []

        def keep(record: logging.LogRecord) -> bool:
            seen.append(record)
            return True

        access.addFilter(keep)
        assert logs._plain_route(access) is None
        logs.log_access(access, "GET", "/health", 200, 0.001, {})
        assert len(seen) == 1 and seen[0].getMessage() == "GET /health 200 1.0ms"
        access.removeFilter(keep)
        access.setLevel(logging.WARNING)
        assert logs._plain_route(access) is None
    finally:
        access.setLevel(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)
        logs._installed = installed
        for name, saved in chatty.items():
            logging.getLogger(name).setLevel(saved)
        logging.getLogger("uvicorn.access").disabled = False
