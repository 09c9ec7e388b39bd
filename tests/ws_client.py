"""A small GraphQL-over-websocket client for tests, speaking either protocol by hand.

    async with WSClient.connect(server.ws_url, token, protocol=TRANSPORT) as ws:
        op = await ws.subscribe(ORDER_STATUS, {"orderId": order_id})
        event = await ws.next_data(op)          # the `data` of the next result
        await ws.expect_nothing(op, 0.5)        # no message for this operation
        await ws.complete(op)

Both protocols look the same from here: legacy `data` is reported as `next`, and an
`error` payload is always a list of GraphQL errors. `connect` raises `Refused` when the
server closes the socket instead of acknowledging `connection_init`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
PROTOCOLS = (TRANSPORT, LEGACY)

ORDER_STATUS = """
subscription Status($orderId: ID) {
  orderStatusChanged(orderId: $orderId) { orderId status previousStatus version changedAt }
}
"""


class Refused(Exception):
    def __init__(self, code: int | None, reason: str, messages: list[dict[str, Any]]) -> None:
        super().__init__(f"connection refused: {code} {reason!r} after {messages}")
        self.code = code
        self.reason = reason
        self.messages = messages


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


@dataclass
class Message:
    type: str  # next | error | complete
    id: str
    payload: Any


class WSClient:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.acked_payload: Any = None
        self.control: list[dict[str, Any]] = []  # ka, pong, ...
        self._ids = itertools.count(1)
        self._buffered: dict[str, deque[Message]] = defaultdict(deque)

    @classmethod
    def connect(
        cls,
        url: str,
        token: str | None,
        *,
        protocol: str = TRANSPORT,
        payload: dict[str, Any] | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> _Connecting:
        if payload is None:
            payload = {"authorization": f"Bearer {token}"} if token else {}
        return _Connecting(url, protocol, payload, timeout, headers)

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def _recv_raw(self, timeout: float) -> dict[str, Any]:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from exc
        # Browsers' graphql-ws cannot read binary frames: the server must send text.
        assert isinstance(raw, str), f"binary frame from the server: {raw!r}"
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def _init(self, payload: dict[str, Any], timeout: float) -> None:
        await self._send({"type": "connection_init", "payload": payload})
        seen: list[dict[str, Any]] = []
        try:
            while True:
                message = await self._recv_raw(timeout)
                seen.append(message)
                if message["type"] == "connection_ack":
                    self.acked_payload = message.get("payload")
                    return
        except Closed as exc:
            raise Refused(exc.code, exc.reason, seen) from exc

    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None, op_id: str | None = None
    ) -> str:
        op_id = op_id or str(next(self._ids))
        kind = "subscribe" if self.protocol == TRANSPORT else "start"
        payload = {"query": query, "variables": variables or {}}
        await self._send({"type": kind, "id": op_id, "payload": payload})
        return op_id

    async def complete(self, op_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT else "stop"
        await self._send({"type": kind, "id": op_id})

    async def ping(self) -> None:
        assert self.protocol == TRANSPORT
        await self._send({"type": "ping"})

    async def receive(self, op_id: str, timeout: float = 10.0) -> Message:
        """The next message for this operation (others are kept for their readers)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._buffered[op_id]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no message for operation {op_id} in {timeout} s")
            raw = await self._recv_raw(remaining)
            message = self._normalise(raw)
            if message is None:
                self.control.append(raw)
            else:
                self._buffered[message.id].append(message)
        return self._buffered[op_id].popleft()

    async def next_data(self, op_id: str, timeout: float = 10.0) -> dict[str, Any]:
        message = await self.receive(op_id, timeout)
        if message.type != "next" or message.payload.get("errors"):
            raise AssertionError(f"expected data, got {message}")
        data: dict[str, Any] = message.payload["data"]
        return data

    async def expect_nothing(self, op_id: str, seconds: float) -> None:
        try:
            message = await self.receive(op_id, seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message for {op_id}, got {message}")

    async def wait_closed(self, timeout: float = 10.0) -> Closed:
        """Read (and drop) messages until the server closes the socket."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._recv_raw(max(0.0, deadline - loop.time()))
            except Closed as exc:
                return exc

    def _normalise(self, raw: dict[str, Any]) -> Message | None:
        kind = raw.get("type")
        if kind in ("next", "data"):
            return Message("next", raw["id"], raw.get("payload"))
        if kind == "error":
            payload = raw.get("payload")
            errors = payload if isinstance(payload, list) else [payload]
            return Message("error", raw["id"], errors)
        if kind == "complete":
            return Message("complete", raw["id"], None)
        return None  # ka, pong: kept in `control`

    async def close(self) -> None:
        await self.ws.close()


class _Connecting:
    """`await WSClient.connect(...)` or `async with WSClient.connect(...) as ws`."""

    def __init__(
        self,
        url: str,
        protocol: str,
        payload: dict[str, Any],
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._args = (url, protocol, payload, timeout)
        self._headers = headers
        self._client: WSClient | None = None

    async def _open(self) -> WSClient:
        url, protocol, payload, timeout = self._args
        ws = await connect(
            url,
            subprotocols=[protocol],  # type: ignore[list-item]
            open_timeout=timeout,
            additional_headers=self._headers,
        )
        client = WSClient(ws, protocol)
        try:
            await client._init(payload, timeout)
        except BaseException:
            await ws.close()
            raise
        return client

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> WSClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()
