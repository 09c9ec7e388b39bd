"""Thousands of idle `graphql-transport-ws` subscribers in one process.

    python -m bench.fanout_client WS_URL TOKEN

A bare asyncio protocol rather than a websocket library: it must take 10,000 deliveries of
one event and stamp each with its arrival time before the next one arrives, on a core it
shares with PostgreSQL and Redis. The arrival time is taken when the bytes come off the
socket; JSON is parsed only when the harness asks for the numbers.

Commands, one JSON object per line on stdin; one JSON answer per line on stdout:
  {"cmd": "connect", "total": N}     open (and subscribe) connections until N are open
  {"cmd": "reset"}                   forget what was received so far
  {"cmd": "collect", "orders": [..]} delivery numbers for the events of these orders
  {"cmd": "close"}                   close every connection and exit
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import time
from datetime import datetime
from typing import cast
from urllib.parse import urlsplit

import orjson

SUBSCRIPTION = (
    "subscription { orderStatusChanged(orderId: null) { orderId status version changedAt } }"
)


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + _mask(payload, key)


class Subscriber(asyncio.Protocol):
    def __init__(self, host: str, path: str, token: str) -> None:
        self.host, self.path, self.token = host, path, token
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received: list[tuple[float, bytes]] = []
        self.closed_with: int | None = None
        self.errors: list[bytes] = []

    # -- transport callbacks --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed_with is None:
            self.closed_with = -1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self._fail(f"upgrade refused: {head[:200]!r}")
                return
            self.upgraded = True
            init = {"type": "connection_init", "payload": {"authorization": self.token}}
            self._send(orjson.dumps(init))
        self._frames(now)

    # -- websocket frames -----------------------------------------------------------
    def _frames(self, now: float) -> None:
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if len(buf) - start < 2:
                    break
                n = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif n == 127:
                if len(buf) - start < 8:
                    break
                n = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            if len(buf) - start < n:
                break
            payload = buf[start : start + n]
            pos = start + n
            self._message(b0 & 0x0F, payload, now)
        self.buffer = buf[pos:]

    def _message(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1:
            if self.ready.done():
                if payload.startswith(b'{"type":"ping"') or b'"type":"ping"' in payload[:40]:
                    self._send(b'{"type":"pong"}')
                else:
                    self.received.append((now, payload))
                return
            message = orjson.loads(payload)
            if message.get("type") == "connection_ack":
                sub = {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}
                self._send(orjson.dumps(sub))
                self.ready.set_result(None)
            elif message.get("type") == "ping":
                self._send(b'{"type":"pong"}')
        elif opcode == 0x9:  # ping
            self._send(payload, opcode=0xA)
        elif opcode == 0x8:  # close
            self.closed_with = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
            self._fail(f"closed by the server: {payload[2:]!r}")
            if self.transport is not None:
                self.transport.close()

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(payload, opcode))

    def _fail(self, why: str) -> None:
        self.errors.append(why.encode())
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(b"\x03\xe8", opcode=0x8)
            self.transport.close()


class Crowd:
    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.hostname = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host = parts.netloc
        self.path = parts.path or "/"
        self.token = token
        self.subs: list[Subscriber] = []

    async def _open_one(self, gate: asyncio.Semaphore) -> Subscriber | None:
        loop = asyncio.get_running_loop()
        async with gate:
            try:
                _, sub = await loop.create_connection(
                    lambda: Subscriber(self.host, self.path, self.token),
                    self.hostname,
                    self.port,
                )
                await asyncio.wait_for(sub.ready, timeout=60)
            except (OSError, TimeoutError, ConnectionError) as exc:
                print(f"fanout_client: connect failed: {exc!r}", file=sys.stderr)
                return None
            return sub

    async def connect(self, total: int) -> dict:
        started = time.perf_counter()
        gate = asyncio.Semaphore(128)
        wanted = max(0, total - len(self.subs))
        opened = await asyncio.gather(*(self._open_one(gate) for _ in range(wanted)))
        ok = [s for s in opened if s is not None]
        self.subs.extend(ok)
        return {
            "open": len(self.subs),
            "failed": wanted - len(ok),
            "seconds": round(time.perf_counter() - started, 3),
        }

    async def settle(self, events: int, wait: float) -> None:
        """Wait until every subscriber holds `events` messages, or `wait` seconds."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            open_subs = [s for s in self.subs if s.closed_with is None]
            if all(len(s.received) >= events for s in open_subs):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)

    def reset(self) -> dict:
        for s in self.subs:
            s.received.clear()
        return {"ok": True}

    def collect(self, orders: list[str]) -> dict:
        wanted = set(orders)
        latencies: list[float] = []
        duplicates = other = 0
        got = 0
        dropped = sum(1 for s in self.subs if s.closed_with is not None)
        errors = [e.decode(errors="replace") for s in self.subs for e in s.errors][:5]
        for s in self.subs:
            seen: set[str] = set()
            for arrived, payload in s.received:
                message = orjson.loads(payload)
                if message.get("type") != "next":
                    other += 1
                    if len(errors) < 5:
                        errors.append(payload[:300].decode(errors="replace"))
                    continue
                event = message["payload"]["data"]["orderStatusChanged"]
                order_id = event["orderId"]
                if order_id not in wanted:
                    continue
                if order_id in seen:
                    duplicates += 1
                    continue
                seen.add(order_id)
                got += 1
                changed = datetime.fromisoformat(event["changedAt"]).timestamp()
                latencies.append((arrived - changed) * 1000)
        expected = len(self.subs) * len(wanted)
        latencies.sort()

        def pct(p: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

        return {
            "subscribers": len(self.subs),
            "events": len(wanted),
            "expected": expected,
            "delivered": got,
            "lost": expected - got,
            "duplicates": duplicates,
            "other_messages": other,
            "dropped_connections": dropped,
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "max_ms": round(latencies[-1], 2) if latencies else None,
            "errors": errors,
        }

    def close(self) -> dict:
        for s in self.subs:
            s.close()
        return {"closed": len(self.subs)}


async def main(url: str, token: str) -> None:
    crowd = Crowd(url, token)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            crowd.close()
            return
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "connect":
            answer = await crowd.connect(int(command["total"]))
        elif cmd == "reset":
            answer = crowd.reset()
        elif cmd == "collect":
            orders = [str(o) for o in command["orders"]]
            await crowd.settle(len(orders), float(command.get("wait", 30)))
            answer = crowd.collect(orders)
        elif cmd == "close":
            answer = crowd.close()
            await asyncio.sleep(0.2)
            print(json.dumps(answer), flush=True)
            return
        else:
            answer = {"error": f"unknown command {cmd}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    run(main(sys.argv[1], sys.argv[2]))
