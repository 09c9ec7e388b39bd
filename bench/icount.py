"""What tracing costs a request, in instructions counted by callgrind: free of the drift.

    .venv/bin/python -m bench.icount                  # { __typename }, 1000 requests a mode
    .venv/bin/python -m bench.icount --fast-paths off --requests 500
    .venv/bin/python -m bench.icount --rev HEAD~1      # another revision, same harness

The shared machine's speed drifts by 10 to 25% from one minute to the next (a plain Python
loop timed six times in a minute ran from 304 to 521 ms), so a few percent of CPU cannot
be told apart in seconds, even interleaved (bench/ab). valgrind's callgrind counts the
instructions a process runs instead: the same count for the same work, whatever else the
machine is doing (two runs of the same mode agree within about 0.5%).

Each mode is one app, in process (SQLite, no server, no network on the request's path),
answering the same POST /graphql request through the whole ASGI stack, middleware
included, and its count a request is the difference between a run of 300 + N requests
and one of 300 + 200 (start-up, imports and warm-up cancel out):
- `off`: no OTEL_* variables;
- `unsampled`: tracing on, sampler ratio 0 (every new trace dropped at the server span);
- `sampled`: ratio 1 (every request a recorded trace, its spans encoded and posted to a
  stand-in collector, bench/otlp_sink.py, on the batch processor's thread).
At a ratio r a request costs (1 - r) x unsampled + r x sampled; the report gives 10%.

What it does not count: time in the kernel (system calls: the export's HTTP post, the
batch queue's `getpid`), and cache misses. bench/ab measures those, with the noise. Each
run keeps the app's background loops asleep (the relay's and the outbox marks' timers
would otherwise fire 50 times more often per request under valgrind's slowdown) and
exports by batch size only (OTEL_BSP_SCHEDULE_DELAY), as under load. A run takes about
90 s; two run at once (2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# This file's checkout: the tree measured unless --rev names another.
REPO = Path(__file__).resolve().parent.parent

WARMUP = 300
BASE = 200
MODES = {"off": None, "unsampled": "0", "sampled": "1.0"}
_COLLECTED = re.compile(r"Collected : (\d+)")


def _child(mode: str, count: int, query: str, fast_paths: bool) -> None:
    """Serve `WARMUP + count` requests in process (under valgrind), then flush the spans."""
    import server.background as background
    from infra import tracing
    from infra.settings import Settings
    from resolvers import events
    from server.app import create_app

    # Asleep for the run: their timers fire per second, and a second under valgrind is
    # about a fiftieth of the requests it is natively.
    background.RELAY_INTERVAL_SECONDS = 1e6
    events.MARK_EVERY_SECONDS = 1e6  # a module constant, for this run only

    async def run() -> None:
        workdir = tempfile.mkdtemp(prefix="icount-")
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{workdir}/icount.db",
            app_env="test",
            bcrypt_rounds=4,
            fast_paths=fast_paths,
        )
        app = create_app(settings, freeze_heap=True)
        body = json.dumps({"query": query}).encode()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        request = {"type": "http.request", "body": body, "more_body": False}
        failed: list[str] = []

        async def receive() -> dict[str, Any]:
            return request

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                failed.append(f"status {message['status']}")
            elif message["type"] == "http.response.body" and b'"errors"' in message["body"]:
                failed.append(message["body"].decode(errors="replace")[:300])

        async with app.router.lifespan_context(app):
            for _ in range(WARMUP + count):
                await app({**scope, "state": {}}, receive, send)
            if tracing._provider is not None:
                tracing._provider.force_flush()
        if failed:
            raise SystemExit(f"{len(failed)} requests answered with an error: {failed[0]}")
        shutil.rmtree(workdir, ignore_errors=True)

    asyncio.run(run())


def _count(
    mode: str, count: int, *, args: argparse.Namespace, sink: str, workdir: Path, tree: Path
) -> int:
    """The instructions of one run of `tree`'s app under callgrind (all threads)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        # The tree's packages before the editable install's (this checkout's).
        "PYTHONPATH": str(tree),
        "PYTHONHASHSEED": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100000000",
    }
    ratio = MODES[mode]
    if ratio is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink
        env["OTEL_TRACES_SAMPLER_ARG"] = ratio
    log = workdir / f"{mode}.{count}.log"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={workdir / f'{mode}.{count}.out'}",
            f"--log-file={log}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            mode,
            str(count),
            "--query",
            args.query,
            "--fast-paths",
            args.fast_paths,
        ],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    found = _COLLECTED.search(log.read_text())
    if found is None:
        raise SystemExit(f"callgrind reported no total: {log}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.icount", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="requests counted a mode")
    p.add_argument("--query", default="{ __typename }")
    p.add_argument("--fast-paths", choices=("on", "off"), default="on")
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    p.add_argument(
        "--rev", help="measure this git revision (a temporary worktree) instead of this tree"
    )
    p.add_argument("--child", nargs=2, metavar=("MODE", "COUNT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.query, args.fast_paths == "on")
        return
    if args.requests < 1:
        p.error("--requests must be at least 1")
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.icount needs valgrind (apt-get install valgrind)")
    from bench.ab import checkout
    from bench.processes import free_port

    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    per_request: dict[str, float] = {}
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="icount-"))
            tree = stack.enter_context(checkout(args.rev)) if args.rev else REPO
            pool = stack.enter_context(ThreadPoolExecutor(2))
            for done, mode in enumerate(MODES, 1):
                counts = [BASE, BASE + args.requests]
                small, large = pool.map(
                    functools.partial(
                        _count,
                        mode,
                        args=args,
                        sink=f"http://127.0.0.1:{port}",
                        workdir=Path(tmp),
                        tree=tree,
                    ),
                    counts,
                )
                per_request[mode] = (large - small) / args.requests
                print(
                    f"[{done}/{len(MODES)}, {time.monotonic() - started:.0f} s] {mode}: "
                    f"{per_request[mode] / 1000:.1f}k instructions a request",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        sink.terminate()
        sink.wait()
    print(report(per_request, args))
    if args.out:
        args.out.write_text(report(per_request, args) + "\n")


def report(per_request: dict[str, float], args: argparse.Namespace) -> str:
    off = per_request["off"]
    unsampled, sampled = per_request["unsampled"], per_request["sampled"]
    at_10 = 0.9 * unsampled + 0.1 * sampled
    rows = [
        ("tracing off", off),
        ("on, unsampled (ratio 0)", unsampled),
        ("on, sampled (ratio 1)", sampled),
        ("on at 10%: 0.9 x unsampled + 0.1 x sampled", at_10),
    ]
    tree = args.rev or "this tree"
    lines = [
        f"{tree}: `{args.query}`, FAST_PATHS={args.fast_paths}, {args.requests} requests a "
        "mode (callgrind, all threads)",
        "",
        "| mode | instructions a request | vs off |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {value / 1000:.1f}k | {value / off:.3f} |" for name, value in rows),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
