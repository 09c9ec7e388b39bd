"""The fan-out workload: thousands of websocket subscribers, one event each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.database import connect
from bench.measure import UPDATE_MUTATION, check_graphql, graphql_body, json_headers
from bench.processes import (
    REPO,
    Server,
    cpu_seconds,
    log,
    raise_nofile,
    rss_bytes,
    stop_process_group,
)
from bench.runs import Failure, Run


class FanoutClient:
    def __init__(self, run: Run, ws_url: str, token: str) -> None:
        pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
        self.process = subprocess.Popen(
            [*pin, sys.executable, "-m", "bench.fanout_client", ws_url, token],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=raise_nofile,
        )
        run.helpers.append(self.process)

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fan-out client died")
        answer: dict[str, Any] = json.loads(line)
        return answer


def _active_subscriptions(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^graphql_active_subscriptions(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


async def drive_events(url: str, token: str, order_ids: list[int], rate: float) -> list[str]:
    """updateOrderStatus(PENDING -> PAID) for each order, `rate` per second, as an admin."""
    sent: list[str] = []
    headers = json_headers(token)
    # Generous: with thousands of subscribers the server is busy delivering earlier events.
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=180) as client:
        start = time.perf_counter()
        pending: list[asyncio.Task[httpx.Response]] = []
        for i, order_id in enumerate(order_ids):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = graphql_body(
                UPDATE_MUTATION, {"input": {"id": str(order_id), "status": "PAID", "version": 1}}
            )
            pending.append(asyncio.create_task(client.post("/graphql", content=body)))
            sent.append(str(order_id))
        for response in await asyncio.gather(*pending):
            check_graphql(response)
    return sent


async def fanout_orders(run: Run, n: int) -> list[int]:
    conn = await connect(run)
    try:
        tag = f"fan{len(run.fanout)}-{time.monotonic_ns()}"
        rows = await conn.fetch(
            "INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, "
            "amount_cents, created_at, updated_at) SELECT $1, 'PENDING', 1, $2 || '-' || g, "
            "md5(g::text) || md5(g::text), 1000, now(), now() FROM generate_series(1, $3) g "
            "RETURNING id",
            run.users["writer"],
            tag,
            n,
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


def run_fanout(run: Run, server: Server) -> None:
    args = run.args
    client: FanoutClient | None = None
    try:
        ws_url = server.url.replace("http://", "ws://") + "/graphql"
        # Warm the server (imports, pools) before taking its resting memory.
        for _ in range(20):
            httpx.post(
                f"{server.url}/graphql",
                content=graphql_body("{ __typename }", {}),
                headers=json_headers(),
            )
        time.sleep(0.5)
        rss_idle = rss_bytes(server.process.pid)
        client = FanoutClient(run, ws_url, run.tokens["admin"])
        for level in args.fanout:
            what = f"fan-out {level}"
            try:
                opened = client.ask(cmd="connect", total=level)
                if opened["open"] < level:
                    raise AssertionError(f"only {opened['open']} of {level} subscribers connected")
                deadline = time.monotonic() + 60
                while _active_subscriptions(server.url) < level:
                    if time.monotonic() > deadline:
                        raise AssertionError("the server never had every subscription active")
                    time.sleep(0.2)
                time.sleep(0.5)
                rss = rss_bytes(server.process.pid)
                client.ask(cmd="reset")
                orders = asyncio.run(fanout_orders(run, args.fanout_events))
                cpu_before = cpu_seconds([server.process.pid])
                started = time.perf_counter()
                sent = asyncio.run(
                    drive_events(server.url, run.tokens["admin"], orders, args.fanout_rate)
                )
                stats = client.ask(
                    cmd="collect",
                    orders=sent,
                    wait=max(30.0, level * len(sent) / 1000),
                    expected=len(sent),
                )
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds([server.process.pid]) - cpu_before
                row = {
                    **stats,
                    "level": level,
                    "rate": args.fanout_rate,
                    "connect_seconds": opened["seconds"],
                    "rss_idle_mb": rss_idle / 2**20,
                    "rss_mb": rss / 2**20,
                    "kb_per_subscriber": (rss - rss_idle) / level / 1024,
                    "cpu_us_per_delivery": cpu / max(1, stats["delivered"]) * 1e6,
                    "seconds": elapsed,
                }
                run.fanout.append(row)
                log(
                    f"fan-out {level:>6}: p50 {row['p50_ms']} ms p95 {row['p95_ms']} ms "
                    f"p99 {row['p99_ms']} ms, lost {row['lost']}, "
                    f"{row['kb_per_subscriber']:.1f} KB/sub, "
                    f"{row['cpu_us_per_delivery']:.0f} us CPU/delivery"
                )
                if row["lost"] or row["dropped_connections"] or row["duplicates"]:
                    raise AssertionError(
                        f"lost {row['lost']}, dropped {row['dropped_connections']}, "
                        f"duplicates {row['duplicates']}: {row['errors']}"
                    )
            except Exception as exc:
                log(f"FAILED {what}: {exc!r}")
                run.failures.append(Failure(what, repr(exc)[:500]))
                break
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.ask(cmd="close")
            stop_process_group(client.process)
