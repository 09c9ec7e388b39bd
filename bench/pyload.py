"""A small asyncio HTTP/1.1 load generator for machines without wrk.

    python -m bench.pyload BASE_URL SPEC.json SECONDS CONNECTIONS

Same request shapes as bench/load.py's Lua scripts; prints one JSON line. Slower than
wrk (it needs more CPU per request), so bench/run prefers wrk when it is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from urllib.parse import urlsplit

from bench.load import TOKEN_PLACEHOLDER, LoadSpec


def _request(spec: LoadSpec, host: str, body: str, extra: dict[str, str]) -> bytes:
    headers = {"Host": host, **spec.headers, **extra}
    data = body.encode()
    if spec.method != "GET" or data:
        headers["Content-Length"] = str(len(data))
    head = f"{spec.method} {spec.path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode() + b"\r\n" + data


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def main(base_url: str, spec: LoadSpec, seconds: float, connections: int) -> dict:
    url = urlsplit(base_url)
    host = url.netloc
    counter = itertools.count(1)
    lines: list[tuple[str, str]] = []
    if spec.mode == "lines":
        with open(spec.lines_file) as f:
            for line in f:
                body, _, sig = line.rstrip("\n").partition("\t")
                lines.append((body, sig))
    latencies: list[float] = []
    errors = non_2xx = wrapped = 0
    deadline = time.perf_counter() + seconds

    def next_request() -> bytes:
        nonlocal wrapped
        n = next(counter)
        if spec.mode == "unique":
            token = f"{spec.token_prefix}-0-{n}"
            return _request(spec, host, spec.body.replace(TOKEN_PLACEHOLDER, token), {})
        if spec.mode == "lines":
            if n > len(lines):
                wrapped += 1
            body, sig = lines[(n - 1) % len(lines)]
            return _request(spec, host, body, {"X-Signature": sig})
        return _request(spec, host, spec.body, {})

    async def connection() -> None:
        nonlocal errors, non_2xx
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(next_request())
                try:
                    status = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(url.hostname, url.port)
                    continue
                latencies.append(time.perf_counter() - started)
                if status >= 400:
                    non_2xx += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
        "errors": errors + non_2xx,
        "non_2xx": non_2xx,
        "wrapped": wrapped,
    }


if __name__ == "__main__":
    base, spec_path, secs, conns = sys.argv[1:5]
    with open(spec_path) as f:
        load_spec = LoadSpec(**json.load(f))
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    print(json.dumps(run(main(base, load_spec, float(secs), int(conns)))))
