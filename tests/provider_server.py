"""Helpers for the payment tests: a real HTTP server playing the payment provider, and
small GraphQL/webhook helpers shared by test_payments*, test_webhook* and test_simulator*.

The provider runs `http.server` in a thread on a free loopback port. Each test scripts
its answers (status, delay, a dropped connection) and reads back what it received, and
when, so that retries and backoff are observed on the wire rather than mocked.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from infra.security import sign_webhook
from infra.settings import Settings
from server.app import create_app
from tests.client import GraphQLClient

INITIATE = """
mutation Pay($input: InitiatePaymentInput!) {
  initiatePayment(input: $input) { id orderId amountCents status redirectUrl }
}
"""
ORDER = """
query Order($id: ID!) {
  order(id: $id) { id status version payment { id status amountCents redirectUrl } }
}
"""


@dataclass(frozen=True)
class Step:
    """One scripted answer. `body=None` answers a valid checkout for the payment."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request arrived
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class ScriptedProvider:
    url: str = ""
    steps: list[Step] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *steps: Step) -> None:
        with self.lock:
            self.steps = list(steps)

    def next_step(self, received: Received) -> Step:
        with self.lock:
            self.requests.append(received)
            return self.steps.pop(0) if self.steps else Step()

    @property
    def gaps(self) -> list[float]:
        times = [r.at for r in self.requests]
        return [b - a for a, b in itertools.pairwise(times)]


def _handler(provider: ScriptedProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            arrived = time.monotonic()
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = {"_raw": raw.decode("latin-1")}
            step = provider.next_step(
                Received(arrived, body, {k.lower(): v for k, v in self.headers.items()})
            )
            if step.delay:
                time.sleep(step.delay)
            if step.drop:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            answer = step.body
            if answer is None:
                pid = body.get("payment_id", "unknown")
                answer = {
                    "redirect_url": f"https://checkout.provider.test/pay/{pid}",
                    "reference": f"ref-{pid}",
                }
            data = answer if isinstance(answer, bytes) else orjson.dumps(answer)
            with contextlib.suppress(OSError):  # the client may have given up already
                self.send_response(step.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def scripted_provider() -> Iterator[ScriptedProvider]:
    provider = ScriptedProvider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    server.daemon_threads = True
    server.block_on_close = False
    provider.url = f"http://127.0.0.1:{server.server_address[1]}/payments"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[GraphQLClient]:
    """An app built from `settings`, started, with a client speaking HTTP to it."""
    app: Starlette = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield GraphQLClient(http, app)


async def new_order(client: GraphQLClient, token: str, client_token: str = "t1") -> str:
    return str((await client.create_order(token, client_token)).ok()["createOrder"]["id"])


async def initiate(client: GraphQLClient, token: str | None, order_id: str) -> Any:
    return await client.execute(INITIATE, {"input": {"orderId": order_id}}, token)


async def read_order(client: GraphQLClient, token: str, order_id: str) -> dict[str, Any]:
    return dict((await client.execute(ORDER, {"id": order_id}, token)).ok()["order"])


async def post_webhook(
    client: GraphQLClient,
    payload: Any,
    secret: bytes | None,
    *,
    signature: str | None = None,
) -> httpx.Response:
    """POST a webhook; signed with `secret` unless a `signature` header is forced."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-signature"] = signature
    elif secret is not None:
        headers["x-signature"] = sign_webhook(body, secret)
    return await client.http.post("/payments/webhook", content=body, headers=headers)


def metric(client: GraphQLClient, name: str, **labels: str) -> float:
    value = client.app.state.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)
