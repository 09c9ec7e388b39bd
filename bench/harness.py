"""The benchmark harness behind `bench/run`: one run, one report.

Creates a throwaway PostgreSQL database and a private Redis key prefix, loads data,
starts the service (`bench.baseline_app`: the real app plus baseline routes) with rate
limits off, drives load from separate processes, and writes the report and its chart.
Every number in the report comes from this run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets
from websockets.typing import Subprotocol

from bench import profile as profiling
from bench import report
from bench.load import TOKEN_PLACEHOLDER, LoadResult, LoadSpec, have_wrk, run_load
from infra.security import create_access_token
from models.queries import EVENT_LOG_LOCK
from resolvers.events import encode_cursor

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

ORDERS_QUERY = (
    "query Orders($limit: Int!) { orders(limit: $limit) { total page pages items { id status "
    "version amountCents createdAt items { sku qty unitPriceCents lineTotalCents } "
    "user { id email role } } } }"
)
CREATE_MUTATION = (
    "mutation Create($input: CreateOrderInput!) { createOrder(input: $input) "
    "{ id status version amountCents } }"
)
UPDATE_MUTATION = (
    "mutation Move($input: UpdateOrderStatusInput!) { updateOrderStatus(input: $input) "
    "{ id status version } }"
)
ITEMS = [{"sku": "WIDGET-001", "qty": 2}, {"sku": "GADGET-002", "qty": 1}]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        found += frontier
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Server:
    name: str
    workers: int
    pinned: bool
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return _descendants(self.process.pid)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (uvicorn's workers, or the one process)."""
        pids = self.pids()
        # uvicorn spawns its workers with multiprocessing; its resource tracker is not one.
        workers = [
            p
            for p in pids[1:]
            if "spawn_main" in (line := _cmdline(p)) and "resource_tracker" not in line
        ]
        return workers if self.workers > 1 and workers else [self.process.pid]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Failure:
    what: str
    why: str


@dataclass
class Run:
    args: argparse.Namespace
    run_id: str
    workdir: Path
    admin_dsn: str
    db_name: str = ""
    redis_url: str = ""
    prefix: str = ""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    servers: list[Server] = field(default_factory=list)
    helpers: list[subprocess.Popen[Any]] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    fanout: list[dict[str, Any]] = field(default_factory=list)
    replay: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    stuck_shutdowns: list[str] = field(default_factory=list)
    batches: int = 0
    # The page of orders as each server answered it (path -> JSON): all must be the same.
    page_answers: dict[str, Any] = field(default_factory=dict)

    def check_page(self, where: str, answer: dict[str, Any]) -> None:
        """Every server that answers the read workloads' page answers it the same."""
        answer = {"data": answer["data"]}  # the service's `extensions.cost` aside
        page = answer["data"]["orders"]
        assert page["total"] >= 200 and len(page["items"]) == 10, page
        assert all(len(o["items"]) == 2 and o["user"] for o in page["items"]), page
        for other, seen in self.page_answers.items():
            assert seen == answer, f"{where} answers the page differently from {other}"
        self.page_answers[where] = answer

    @classmethod
    def start(cls, args: argparse.Namespace, *, tag: str = "") -> Run:
        """A run with its own work directory, database name and Redis key prefix."""
        run_id = f"{tag}{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
        return cls(
            args=args,
            run_id=run_id,
            workdir=Path(tempfile.mkdtemp(prefix=f"bench-{run_id}-")),
            admin_dsn=args.database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
            redis_url=args.redis_url,
            prefix=f"bench-{run_id}:",
        )

    @property
    def db_url(self) -> str:
        base = self.admin_dsn.rsplit("/", 1)[0]
        return f"{base}/{self.db_name}"

    @property
    def sqlalchemy_url(self) -> str:
        return self.db_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    def server_env(self, **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "APP_ENV": "production",
            # No provider here: production refuses to start without one unless asked for
            # the simulator (no benchmark pays through it).
            "PAYMENT_SIMULATOR": "on",
            "DATABASE_URL": self.sqlalchemy_url,
            "REDIS_URL": self.redis_url,
            "REDIS_KEY_PREFIX": self.prefix,
            "SECRET_KEY": self.secret_key,
            "WEBHOOK_SECRET": self.webhook_secret,
            "JWT_EXPIRES_MINUTES": "240",
            "RATE_LIMIT_ORDERS_PER_MINUTE": "0",
            "RATE_LIMIT_LOGIN_FAILURES_PER_MINUTE": "0",
            "LOG_LEVEL": "INFO",
            "PROMETHEUS_MULTIPROC_DIR": "",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR")
        env.update(overrides)
        return env

    def launch_server(
        self,
        name: str,
        *,
        workers: int,
        pinned: bool,
        reference: bool = False,
        env: dict[str, str] | None = None,
        tree: Path = REPO,
    ) -> Server:
        """Start a server process (the service, or with `reference` the issue's reference
        servers of bench/reference_app.py) with `env` over the run's environment, from
        the checkout at `tree` (another revision's, for bench/ab); `wait_ready` waits
        until it answers."""
        port = free_port()
        log_path = self.workdir / f"server-{name}.log"
        pin = ["taskset", "-c", "0"] if pinned else []
        cmd = [*pin, sys.executable, "-m", "bench.serve", "--port", str(port)]
        cmd += ["--workers", str(workers)]
        if reference:
            cmd += ["--app", "bench.reference_app:app", "--bare"]
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                cmd,
                cwd=tree,
                env=self.server_env(PYTHONPATH=str(tree), **(env or {})),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_raise_nofile,
            )
        server = Server(name, workers, pinned, port, process, log_path)
        self.servers.append(server)
        return server

    def wait_ready(self, server: Server) -> Server:
        deadline = time.monotonic() + 60
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server {server.name} exited:\n{server.log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server {server.name} did not start:\n{server.log_path.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        if server.workers > 1:
            # Every worker has to be up, not just the first one to answer.
            deadline = time.monotonic() + 60
            while len(server.worker_pids()) < server.workers and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
        log(
            f"server {server.name}: {server.workers} worker(s)"
            f"{' pinned to CPU 0' if server.pinned else ''}, port {server.port}"
        )
        return server

    def start_server(
        self,
        name: str,
        *,
        workers: int,
        pinned: bool,
        reference: bool = False,
        env: dict[str, str] | None = None,
    ) -> Server:
        return self.wait_ready(
            self.launch_server(name, workers=workers, pinned=pinned, reference=reference, env=env)
        )

    def stop_server(self, server: Server, *, wait: bool = True) -> None:
        """Stop a server; without `wait`, cleanup reaps it (the smoke run does not wait)."""
        if wait:
            hung = stop_process_group(server.process, timeout=8, dump_to=self.workdir)
            if hung:
                log(f"server {server.name} did not stop within 8 s of SIGTERM; stack: {hung}")
                self.stuck_shutdowns.append(server.name)
            if server in self.servers:
                self.servers.remove(server)
        elif server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGTERM)


def stop_process_group(
    process: subprocess.Popen[Any], timeout: float = 15, dump_to: Path | None = None
) -> str | None:
    """SIGTERM, then SIGKILL after `timeout`; with `dump_to`, a process that had to be
    killed leaves a py-spy dump of its stacks there (the path is returned)."""
    if process.poll() is not None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
        return None
    except subprocess.TimeoutExpired:
        pass
    dumped = None
    # The bench server prints its asyncio tasks' stacks to its log on SIGUSR2.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGUSR2)
        time.sleep(1.0)
    if dump_to is not None and profiling.available():
        path = dump_to / f"stuck-{process.pid}.txt"
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [profiling.py_spy_path() or "py-spy", "dump", "--pid", str(process.pid)],
                capture_output=True,
                text=True,
                timeout=20,
            )
            path.write_text(out.stdout + out.stderr)
            dumped = str(path)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return dumped or "killed"


# -- database ----------------------------------------------------------------------------


async def create_database(run: Run) -> None:
    run.db_name = f"bench_{run.run_id}"
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{run.db_name}"')
    finally:
        await conn.close()
    from models.migrate import upgrade_to_head

    await upgrade_to_head(run.sqlalchemy_url)


async def drop_database(run: Run) -> None:
    if not run.db_name:
        return
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{run.db_name}" WITH (FORCE)')
    finally:
        await conn.close()


async def clear_redis(run: Run) -> None:
    if not run.prefix:
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(run.redis_url)
    try:
        async for key in client.scan_iter(match=f"{run.prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


SEED_ORDERS = """
WITH o AS (
  INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, amount_cents,
                      created_at, updated_at)
  SELECT $1, 'PENDING', 1, $2 || '-' || g, md5(g::text) || md5(g::text), 3000,
         now() - make_interval(secs => g), now() - make_interval(secs => g)
  FROM generate_series(1, $3) g
  RETURNING id)
INSERT INTO order_lines (order_id, sku, qty, unit_price_cents)
SELECT o.id, s.sku, s.qty, 1000 FROM o
CROSS JOIN (VALUES ('GADGET-002', 1), ('WIDGET-001', 2)) AS s(sku, qty)
"""

SEED_PAYMENTS = """
WITH o AS (
  INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, amount_cents,
                      created_at, updated_at)
  SELECT $1, 'PENDING', 1, $2 || '-' || g, md5(g::text) || md5(g::text), 1000, now(), now()
  FROM generate_series(1, $3) g
  RETURNING id, client_token)
INSERT INTO payments (id, order_id, amount_cents, status, redirect_url, needs_refund,
                      created_at, updated_at)
SELECT 'pay_' || client_token, id, 1000, 'PENDING', 'http://127.0.0.1/sim', false, now(), now()
FROM o
RETURNING id, order_id
"""


async def seed(run: Run, reader_orders: int) -> None:
    conn = await asyncpg.connect(run.db_url)
    try:
        for name, role in (
            ("reader", "USER"),
            ("writer", "USER"),
            ("payer", "USER"),
            ("admin", "ADMIN"),
        ):
            uid = await conn.fetchval(
                "INSERT INTO users (email, password_hash, role, created_at) "
                "VALUES ($1, $2, $3, now()) RETURNING id",
                f"{name}@bench.example.com",
                "!unusable",
                role,
            )
            run.users[name] = uid
            run.tokens[name] = "Bearer " + create_access_token(
                uid, role, secret=run.secret_key, expires_minutes=240
            )
        await conn.execute(SEED_ORDERS, run.users["reader"], "seed", reader_orders)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def payment_batch(run: Run, size: int) -> tuple[str, Path, int]:
    """`size` PENDING orders with a PENDING payment each, and their signed SUCCESS
    deliveries, one per line: (batch tag, lines file, size)."""
    run.batches += 1
    tag = f"b{run.batches}"
    conn = await _connect(run)
    try:
        rows = await conn.fetch(SEED_PAYMENTS, run.users["payer"], tag, size)
    finally:
        await conn.close()
    path = run.workdir / f"webhooks-{tag}.tsv"
    key = run.webhook_secret.encode()
    with open(path, "w") as f:
        for row in rows:
            body = orjson.dumps(
                {"payment_id": row["id"], "order_id": str(row["order_id"]), "status": "SUCCESS"}
            )
            sig = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            f.write(f"{body.decode()}\t{sig}\n")
    return tag, path, len(rows)


async def _connect(run: Run) -> asyncpg.Connection:
    """A connection for the harness itself; waits out a momentary connection limit (the
    machine's PostgreSQL is shared with other test suites)."""
    for attempt in range(20):
        try:
            return await asyncpg.connect(run.db_url)
        except asyncpg.TooManyConnectionsError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def analyze(run: Run) -> None:
    """Fresh planner statistics: the writes and webhooks add tens of thousands of orders,
    and a read measured after them on statistics from the seed gets worse plans (the bare
    route's page fell from ~700 to ~90 requests/s), which autovacuum would not allow to
    last in a real database."""
    conn = await _connect(run)
    try:
        await conn.execute("ANALYZE users, orders, order_lines, payments")
    finally:
        await conn.close()


async def count(run: Run, sql: str, *params: Any) -> int:
    conn = await _connect(run)
    try:
        return int(await conn.fetchval(sql, *params))
    finally:
        await conn.close()


# -- workloads ---------------------------------------------------------------------------


def graphql_body(query: str, variables: dict[str, Any]) -> str:
    return orjson.dumps({"query": query, "variables": variables}).decode()


def json_headers(token: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = token
    return headers


def _check_graphql(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
    body = response.json()
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body


@dataclass
class Workload:
    key: str  # e.g. "reads_cold"
    label: str
    side: str  # "graphql" or "baseline"
    spec: LoadSpec
    sample: Callable[[str], None]  # sends one request and checks the answer
    after: Callable[[LoadResult], None] | None = None
    warmup: bool = True


def measure(run: Run, server: Server, w: Workload, *, config: str) -> dict[str, Any] | None:
    args = run.args
    what = f"{config} {w.key}/{w.side}"
    try:
        w.sample(server.url)
        if w.warmup and args.warmup > 0:
            run_load(
                _warm_spec(w.spec),
                server.url,
                duration=args.warmup,
                connections=args.connections,
                cpus="1" if server.pinned else None,
                workdir=run.workdir,
                use_wrk=args.wrk,
            )
        pids = server.pids()
        workers = server.worker_pids()
        cpu_before = cpu_seconds(pids)
        per_worker_before = [cpu_seconds([p]) for p in workers]
        result = run_load(
            w.spec,
            server.url,
            duration=args.duration,
            connections=args.connections,
            cpus="1" if server.pinned else None,
            workdir=run.workdir,
            use_wrk=args.wrk,
        )
        cpu = cpu_seconds(pids) - cpu_before
        per_worker = [cpu_seconds([p]) - b for p, b in zip(workers, per_worker_before, strict=True)]
        if result.errors:
            raise AssertionError(f"{result.errors} errors ({result.non_2xx} non-2xx answers)")
        if result.requests == 0:
            if not args.smoke:
                raise AssertionError("no request completed")
            log(f"{what}: no request completed in {args.duration:g} s (smoke: not an error)")
            return None
        if w.after is not None:
            w.after(result)
    except Exception as exc:
        log(f"FAILED {what}: {exc}")
        if args.verbose:
            traceback.print_exc()
        run.failures.append(Failure(what, str(exc)[:500]))
        return None
    row = {
        "config": config,
        "workload": w.key,
        "label": w.label,
        "side": w.side,
        **result.as_dict(),
        "cpu_us_per_request": cpu / result.requests * 1e6,
        "cpu_seconds": cpu,
        # How the work fell on uvicorn's workers (they share one listening socket).
        "worker_cpu_share": [round(c / sum(per_worker), 2) for c in per_worker]
        if len(per_worker) > 1 and sum(per_worker) > 0
        else [],
    }
    run.results.append(row)
    log(
        f"{config:>10} {w.key:<12} {w.side:<8} {result.rps:9.0f} req/s  p50 {result.p50_ms:6.1f} ms"
        f"  p99 {result.p99_ms:6.1f} ms  cpu {row['cpu_us_per_request']:7.0f} us/req"
        + (f"  WRAPPED {result.wrapped}" if result.wrapped else "")
    )
    return row


def _warm_spec(spec: LoadSpec) -> LoadSpec:
    if spec.mode == "unique":
        return LoadSpec(**{**spec.__dict__, "token_prefix": spec.token_prefix + "-warm"})
    return spec


def overhead_workloads(run: Run) -> list[Workload]:
    def sample_plain(url: str) -> None:
        r = httpx.get(f"{url}/bench/plain", timeout=10)
        assert r.status_code == 200 and r.json() == {"data": {"__typename": "Query"}}, r.text

    typename = graphql_body("{ __typename }", {})

    def sample_typename(url: str) -> None:
        body = _check_graphql(
            httpx.post(f"{url}/graphql", content=typename, headers=json_headers())
        )
        # Besides the data, the service reports the query's cost in `extensions`.
        assert body.get("data") == {"__typename": "Query"} and "errors" not in body, body

    return [
        Workload(
            "overhead", "trivial request", "baseline", LoadSpec("GET", "/bench/plain"), sample_plain
        ),
        Workload(
            "overhead",
            "trivial request",
            "graphql",
            LoadSpec("POST", "/graphql", json_headers(), typename),
            sample_typename,
        ),
    ]


def read_workloads(run: Run, key: str) -> list[Workload]:
    token = run.tokens["reader"]
    body = graphql_body(ORDERS_QUERY, {"limit": 10})
    headers = json_headers(token)

    def sample(path: str) -> Callable[[str], None]:
        def check(url: str) -> None:
            asyncio.run(analyze(run))
            answer = _check_graphql(httpx.post(url + path, content=body, headers=headers))
            # The baseline must answer exactly what GraphQL answers (and the references).
            run.check_page("the service's " + path, answer)

        return check

    label = "orders(limit: 10), " + ("cache off" if key == "reads_cold" else "cache warm")
    return [
        Workload(
            key,
            label,
            "baseline",
            LoadSpec("POST", "/bench/orders", headers, body),
            sample("/bench/orders"),
        ),
        Workload(
            key, label, "graphql", LoadSpec("POST", "/graphql", headers, body), sample("/graphql")
        ),
    ]


def write_workloads(run: Run, config: str) -> list[Workload]:
    token = run.tokens["writer"]
    writer = run.users["writer"]
    headers = json_headers(token)
    template = graphql_body(
        CREATE_MUTATION, {"input": {"clientToken": TOKEN_PLACEHOLDER, "items": ITEMS}}
    )
    out = []
    for side, path in (("baseline", "/bench/create-order"), ("graphql", "/graphql")):
        prefix = f"{config}-{side}"

        def sample(url: str, path: str = path, prefix: str = prefix) -> None:
            body = template.replace(TOKEN_PLACEHOLDER, f"{prefix}-check")
            answer = _check_graphql(httpx.post(url + path, content=body, headers=headers))
            assert answer["data"]["createOrder"]["status"] == "PENDING", answer

        def after(result: LoadResult, prefix: str = prefix) -> None:
            made = asyncio.run(
                count(
                    run,
                    "SELECT count(*) FROM orders WHERE user_id = $1 AND client_token LIKE $2",
                    writer,
                    f"{prefix}-0-%",
                )
            )
            if not result.requests <= made <= result.requests + run.args.connections:
                raise AssertionError(f"{result.requests} answers but {made} new orders")

        out.append(
            Workload(
                "writes",
                "createOrder, unique tokens",
                side,
                LoadSpec("POST", path, headers, template, mode="unique", token_prefix=prefix),
                sample,
                after,
            )
        )
    return out


def webhook_workloads(run: Run, config: str, expected_rps: dict[str, float]) -> list[Workload]:
    out = []
    for side, path in (("baseline", "/bench/webhook"), ("graphql", "/payments/webhook")):
        size = max(200, int(expected_rps[side] * run.args.duration * 1.5))
        tag, lines, made = asyncio.run(payment_batch(run, size + 1))
        with open(lines) as f:
            first = f.readline()
        rest = run.workdir / f"{lines.stem}-load.tsv"
        with open(lines) as src, open(rest, "w") as dst:
            src.readline()
            shutil.copyfileobj(src, dst)

        def sample(url: str, path: str = path, line: str = first) -> None:
            body, _, sig = line.rstrip("\n").partition("\t")
            r = httpx.post(url + path, content=body, headers={**json_headers(), "X-Signature": sig})
            assert r.status_code == 200 and r.json().get("status") == "processed", r.text

        def after(result: LoadResult, tag: str = tag, made: int = made - 1) -> None:
            paid = asyncio.run(
                count(
                    run,
                    "SELECT count(*) FROM payments WHERE id LIKE $1 AND status = 'SUCCEEDED'",
                    f"pay_{tag}-%",
                )
            )
            paid -= 1  # the sample
            low = min(result.requests, made)
            if not low <= paid <= min(made, result.requests + run.args.connections):
                raise AssertionError(f"{result.requests} answers but {paid} payments succeeded")

        out.append(
            Workload(
                "webhooks",
                "SUCCESS webhook, each for its own payment",
                side,
                LoadSpec("POST", path, json_headers(), mode="lines", lines_file=str(rest)),
                sample,
                after,
                warmup=False,
            )
        )
    return out


REFERENCE = "reference"


def reference_workloads(run: Run) -> list[Workload]:
    """The issue's four reference figures: a bare Starlette route and stock Strawberry,
    on a trivial request and on the read workloads' page (bench/reference_app.py)."""
    typename = graphql_body("{ __typename }", {})
    page_body = graphql_body(ORDERS_QUERY, {"limit": 10})
    reader = json_headers(run.tokens["reader"])

    def sample_trivial(path: str, method: str) -> Callable[[str], None]:
        def check(url: str) -> None:
            content = typename if method == "POST" else None
            r = httpx.request(method, url + path, content=content, headers=json_headers())
            assert r.status_code == 200 and r.json() == {"data": {"__typename": "Query"}}, r.text

        return check

    def sample_page(path: str) -> Callable[[str], None]:
        def check(url: str) -> None:
            asyncio.run(analyze(run))
            answer = _check_graphql(httpx.post(url + path, content=page_body, headers=reader))
            run.check_page("the reference's " + path, answer)

        return check

    return [
        Workload(
            "overhead",
            "trivial request",
            "bare",
            LoadSpec("GET", "/plain"),
            sample_trivial("/plain", "GET"),
        ),
        Workload(
            "overhead",
            "trivial request",
            "stock",
            LoadSpec("POST", "/graphql", json_headers(), typename),
            sample_trivial("/graphql", "POST"),
        ),
        Workload(
            "reads_cold",
            "orders(limit: 10)",
            "bare",
            LoadSpec("POST", "/orders", reader, page_body),
            sample_page("/orders"),
        ),
        Workload(
            "reads_cold",
            "orders(limit: 10)",
            "stock",
            LoadSpec("POST", "/graphql", reader, page_body),
            sample_page("/graphql"),
        ),
    ]


def reference_suite(run: Run, *, wait: bool = True) -> None:
    """The reference servers on one pinned worker, as the issue measured them."""
    server = run.start_server(REFERENCE, workers=1, pinned=True, reference=True)
    try:
        for w in reference_workloads(run):
            measure(run, server, w, config=REFERENCE)
    finally:
        run.stop_server(server, wait=wait)


def cold_suite(run: Run, server: Server, config: str) -> None:
    """Everything measured with the read cache off: overhead, cold reads, writes, webhooks."""
    for w in (
        overhead_workloads(run) + read_workloads(run, "reads_cold") + write_workloads(run, config)
    ):
        measure(run, server, w, config=config)
    # Enough payments for each side at up to 2.5 times its createOrder rate.
    guess = {
        side: 2.5
        * max(
            [
                r["rps"]
                for r in run.results
                if r["config"] == config and r["side"] == side and r["workload"] == "writes"
            ]
            or [2000.0]
        )
        for side in ("baseline", "graphql")
    }
    for w in webhook_workloads(run, config, guess):
        measure(run, server, w, config=config)
    if server.pinned and run.args.profile:
        profile_suite(run, server, ("overhead", "reads_cold", "writes", "webhooks"))


def warm_suite(run: Run, server: Server, config: str) -> None:
    for w in read_workloads(run, "reads_warm"):
        measure(run, server, w, config=config)
    if server.pinned and run.args.profile:
        profile_suite(run, server, ("reads_warm",))


def profile_suite(run: Run, server: Server, keys: tuple[str, ...]) -> None:
    """py-spy on the pinned server while it takes each GraphQL workload (apart from the
    measurements: sampling slows the process down a little)."""
    if not profiling.available():
        log("py-spy not found: no profiles")
        return
    seconds = run.args.profile_seconds
    for key in keys:
        if key == "overhead":
            spec = LoadSpec("POST", "/graphql", json_headers(), graphql_body("{ __typename }", {}))
        elif key in ("reads_cold", "reads_warm"):
            spec = LoadSpec(
                "POST",
                "/graphql",
                json_headers(run.tokens["reader"]),
                graphql_body(ORDERS_QUERY, {"limit": 10}),
            )
        elif key == "writes":
            spec = LoadSpec(
                "POST",
                "/graphql",
                json_headers(run.tokens["writer"]),
                graphql_body(
                    CREATE_MUTATION, {"input": {"clientToken": TOKEN_PLACEHOLDER, "items": ITEMS}}
                ),
                mode="unique",
                token_prefix="profile",
            )
        else:
            _, lines, _ = asyncio.run(payment_batch(run, int(2000 * (seconds + 1))))
            spec = LoadSpec(
                "POST", "/payments/webhook", json_headers(), mode="lines", lines_file=str(lines)
            )
        load = functools.partial(
            run_load,
            spec,
            server.url,
            duration=seconds + 1,
            connections=run.args.connections,
            cpus="1",
            workdir=run.workdir,
            use_wrk=run.args.wrk,
        )
        try:
            summary = profiling.record_under_load(
                server.process.pid,
                load,
                seconds=seconds,
                out=run.workdir / f"profile-{key}.txt",
            )
        except Exception as exc:
            log(f"profile of {key} failed: {exc}")
            continue
        summary["workload"] = key
        run.profiles.append(summary)
        top = ", ".join(f"{k} {v:.0%}" for k, v in summary["self_by_library"][:4])
        log(f"profile {key}: {summary['samples']} samples; self time: {top}")


# -- fan-out -----------------------------------------------------------------------------


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
            preexec_fn=_raise_nofile,
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


async def _drive_events(url: str, token: str, order_ids: list[int], rate: float) -> list[str]:
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
            _check_graphql(response)
    return sent


async def _fanout_orders(run: Run, n: int) -> list[int]:
    conn = await _connect(run)
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
                orders = asyncio.run(_fanout_orders(run, args.fanout_events))
                cpu_before = cpu_seconds([server.process.pid])
                started = time.perf_counter()
                sent = asyncio.run(
                    _drive_events(server.url, run.tokens["admin"], orders, args.fanout_rate)
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


# -- replay: a subscriber resuming after missed events ----------------------------------------

REPLAY_SUBSCRIPTION = (
    "subscription($after: String) { orderEvents(after: $after) { cursor orderId kind status "
    "version } }"
)


async def _subscribe_ws(ws_url: str, token: str, after: str | None) -> Any:
    ws = await websockets.connect(
        ws_url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        max_size=None,
    )
    await ws.send(
        orjson.dumps({"type": "connection_init", "payload": {"authorization": token}}).decode()
    )
    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise AssertionError(f"no connection_ack: {ack}")
    query = {"query": REPLAY_SUBSCRIPTION, "variables": {"after": after}}
    await ws.send(orjson.dumps({"type": "subscribe", "id": "1", "payload": query}).decode())
    return ws


async def _missed_events(run: Run, count: int) -> tuple[int, int]:
    """`count` events written straight into the log (as committed changes that nobody
    was subscribed to see), spread over 100 new orders; the log's head before them, and
    the first order's id."""
    orders = await _fanout_orders(run, 100)
    conn = await _connect(run)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENT_LOG_LOCK)
            # The last event the resuming subscriber saw (its cursor), then the ones it missed.
            head = await conn.fetchval(
                "INSERT INTO outbox (topic, payload, created_at, published_at, order_id, "
                "user_id, kind, source, status, version) SELECT 'order.status_changed', '{}', "
                "now(), now(), o.id, o.user_id, 'PAYMENT_FAILED', 'PAYMENT_PROVIDER', 'PENDING', "
                "1 FROM orders o WHERE o.id = $1 RETURNING id",
                orders[0],
            )
            await conn.execute(
                "INSERT INTO outbox (topic, payload, created_at, published_at, order_id, "
                "user_id, kind, source, actor_id, status, previous_status, version) "
                "SELECT 'order.status_changed', '{}', now(), now(), o.id, o.user_id, "
                "'PAYMENT_FAILED', 'PAYMENT_PROVIDER', NULL, 'PENDING', NULL, 1 "
                "FROM generate_series(1, $1) g JOIN orders o ON o.id = ($2::int[])[1 + g % 100]",
                count,
                orders,
            )
    finally:
        await conn.close()
    return int(head), orders[0]


def run_replay(run: Run, server: Server, missed: int) -> None:
    """A subscriber (ADMIN, every order) resumes after `missed` events it did not see:
    time until it has them all, the server's CPU for it, and its memory meanwhile."""
    what = f"replay of {missed:,} events"
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    token = run.tokens["admin"]

    async def measure() -> dict[str, Any]:
        # A live subscriber first: the feed is running, as on a server in use.
        live = await _subscribe_ws(ws_url, token, None)
        try:
            head, order_id = await _missed_events(run, missed)
            # One change through the service: the feed hears of it and reads the events
            # before it from the log (a subscriber that was away missed those).
            await _drive_events(server.url, token, [order_id], 1.0)
            expected = missed + 1
            for _ in range(expected + 1):  # the resuming subscriber's last one too
                frame = orjson.loads(await asyncio.wait_for(live.recv(), 120))
                if frame.get("type") != "next":
                    raise AssertionError(f"the live subscriber got {frame}")
        finally:
            await live.close()
        await asyncio.sleep(0.5)
        rss_before = rss_bytes(server.process.pid)
        peak = rss_before
        cpu_before = cpu_seconds([server.process.pid])
        started = time.perf_counter()
        ws = await _subscribe_ws(ws_url, token, encode_cursor(head))
        cursors: list[str] = []
        first_ms = 0.0
        try:
            while len(cursors) < expected:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 120))
                if frame.get("type") != "next" or frame["payload"].get("errors"):
                    raise AssertionError(f"the resuming subscriber got {frame}")
                if not cursors:
                    first_ms = (time.perf_counter() - started) * 1000
                cursors.append(frame["payload"]["data"]["orderEvents"]["cursor"])
                if len(cursors) % 1000 == 0:
                    peak = max(peak, rss_bytes(server.process.pid))
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds([server.process.pid]) - cpu_before
            peak = max(peak, rss_bytes(server.process.pid))
        finally:
            await ws.close()
        if len(set(cursors)) != expected:
            raise AssertionError(f"{expected - len(set(cursors))} events came twice")
        return {
            "missed": missed,
            "received": len(cursors),
            "seconds": elapsed,
            "first_event_ms": first_ms,
            "events_per_second": expected / elapsed,
            "cpu_seconds": cpu,
            "cpu_us_per_event": cpu / expected * 1e6,
            "rss_mb": rss_before / 2**20,
            "rss_peak_growth_mb": (peak - rss_before) / 2**20,
        }

    try:
        row = asyncio.run(measure())
    except Exception as exc:
        log(f"FAILED {what}: {exc!r}")
        run.failures.append(Failure(what, repr(exc)[:500]))
        return
    run.replay.append(row)
    log(
        f"{what}: {row['seconds']:.2f} s ({row['events_per_second']:,.0f} events/s), first "
        f"after {row['first_event_ms']:.0f} ms, server CPU {row['cpu_seconds']:.2f} s "
        f"({row['cpu_us_per_event']:.0f} us/event), RSS +{row['rss_peak_growth_mb']:.1f} MB"
    )


# -- machine -----------------------------------------------------------------------------


# What a run measures: the checkout but the report's own inputs (bench/NOTES.md,
# bench/before.json) and outputs (docs/), which change nothing that was measured.
CODE = ["--", ".", ":!docs", ":!bench/NOTES.md", ":!bench/before.json"]


def machine_info(run: Run) -> dict[str, Any]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    async def pg_version() -> str:
        conn = await asyncpg.connect(run.admin_dsn)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def redis_version() -> str:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(run.redis_url)
        try:
            return str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": asyncio.run(pg_version()),
        "redis": asyncio.run(redis_version()),
        "packages": {
            name: _dist_version(name)
            for name in (
                "strawberry-graphql",
                "graphql-core",
                "starlette",
                "uvicorn",
                "sqlalchemy",
                "asyncpg",
                "orjson",
            )
        },
        "wrk": first(["wrk", "-v"]).splitlines()[0] if have_wrk() and run.args.wrk else "not used",
        "load_before": os.getloadavg(),
        "git": first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        # The report's own inputs (bench/NOTES.md, bench/before.json) and outputs do not
        # change what was measured.
        "git_dirty": bool(first(["git", "-C", str(REPO), "status", "--porcelain", *CODE])),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


# -- main --------------------------------------------------------------------------------


def add_service_urls(p: argparse.ArgumentParser) -> None:
    """Where the harness finds PostgreSQL (a throwaway database is made there) and Redis."""
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny durations, 1 worker, 100 subscribers")
    p.add_argument("--duration", type=float, help="seconds per measurement")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before a measurement")
    p.add_argument("--fanout", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 1000,5000")
    p.add_argument("--fanout-rate", type=float, help="status changes per second")
    p.add_argument("--fanout-events", type=int, help="status changes per level")
    p.add_argument(
        "--only", default="", help="comma-separated: reference,http1,http2,fanout,replay"
    )
    p.add_argument("--replay-events", type=int, help="events a resuming subscriber missed")
    p.add_argument("--connections", type=int, help="concurrent connections (default 32)")
    p.add_argument("--no-profile", dest="profile", action="store_false", default=None)
    p.add_argument("--profile-seconds", type=float, default=4.0)
    p.add_argument("--out", type=Path, help="report directory (default: docs/, smoke: a temp dir)")
    p.add_argument(
        "--pyload",
        dest="wrk",
        action="store_false",
        default=None,
        help="use bench.pyload even when wrk is installed",
    )
    add_service_urls(p)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "duration": 1.0 if smoke else 8.0,
        "warmup": 0.0 if smoke else 2.0,
        "fanout": [100] if smoke else [1000, 5000, 10000],
        "fanout_rate": 5.0 if smoke else 2.0,
        "fanout_events": 5 if smoke else 10,
        "replay_events": 500 if smoke else 10_000,
        "profile": not smoke,
        "connections": 8 if smoke else 32,
        "wrk": have_wrk(),
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.wrk and not have_wrk():
        p.error("wrk is not installed (apt-get install wrk), or pass --pyload")
    args.only = set(filter(None, args.only.split(","))) or (
        {"http1", "fanout", "replay"}
        if smoke
        else {"reference", "http1", "http2", "fanout", "replay"}
    )
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench-smoke-")) if smoke else REPO / "docs"
    return args


# The fan-out client opens 128 sockets at a time, all from one address and one user.
FANOUT_ENV = {"WS_MAX_CONNECTIONS_PER_USER": "1000000", "WS_MAX_PENDING_PER_ADDRESS": "1000"}


def full_suites(run: Run) -> None:
    """One fresh server per configuration, each stopped before the next one starts."""
    only = run.args.only
    if "reference" in only:
        reference_suite(run)
    for workers, pinned, part in ((1, True, "http1"), (2, False, "http2")):
        if part not in only:
            continue
        config = "1w-pinned" if pinned else f"{workers}w"
        server = run.start_server(
            f"{config}-cold", workers=workers, pinned=pinned, env={"CACHE_TTL_SECONDS": "0"}
        )
        try:
            cold_suite(run, server, config)
        finally:
            run.stop_server(server)
        server = run.start_server(
            f"{config}-warm", workers=workers, pinned=pinned, env={"CACHE_TTL_SECONDS": "30"}
        )
        try:
            warm_suite(run, server, config)
        finally:
            run.stop_server(server)
    if "fanout" in only:
        server = run.start_server("fanout", workers=1, pinned=True, env=FANOUT_ENV)
        try:
            run_fanout(run, server)
        finally:
            run.stop_server(server)
    if "replay" in only:
        server = run.start_server("replay", workers=1, pinned=True)
        try:
            run_replay(run, server, run.args.replay_events)
        finally:
            run.stop_server(server)


def smoke_suites(run: Run) -> None:
    """Every workload once, briefly, on one worker: both servers start together, and the
    fan-out uses the warm one."""
    cold = run.launch_server(
        "1w-pinned-cold", workers=1, pinned=True, env={"CACHE_TTL_SECONDS": "0"}
    )
    warm = run.launch_server(
        "1w-pinned-warm",
        workers=1,
        pinned=True,
        env={"CACHE_TTL_SECONDS": "30", **FANOUT_ENV},
    )
    run.wait_ready(cold)
    run.wait_ready(warm)
    reference_suite(run, wait=False)
    cold_suite(run, cold, "1w-pinned")
    run.stop_server(cold, wait=False)
    warm_suite(run, warm, "1w-pinned")
    if "fanout" in run.args.only:
        run_fanout(run, warm)
    if "replay" in run.args.only:
        run_replay(run, warm, run.args.replay_events)
    run.stop_server(warm, wait=False)


@contextlib.contextmanager
def cleaned_up(run: Run) -> Iterator[None]:
    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        for server in list(run.servers):
            run.stop_server(server)
        for helper in run.helpers:
            stop_process_group(helper, timeout=5)
        for step in (drop_database, clear_redis):
            try:
                asyncio.run(step(run))
            except Exception as exc:
                log(f"cleanup: {step.__name__} failed: {exc}")
        if not run.args.keep:
            shutil.rmtree(run.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    run = Run.start(args)
    log(f"{'smoke' if args.smoke else 'full'} run {run.run_id}; work directory {run.workdir}")
    with cleaned_up(run):
        machine = machine_info(run)
        log(
            f"load average before: {machine['load_before']}; load from "
            f"{'wrk' if args.wrk else 'bench.pyload'}"
        )
        asyncio.run(create_database(run))
        asyncio.run(seed(run, reader_orders=200))
        log(f"database {run.db_name} ready")
        if args.smoke:
            smoke_suites(run)
        else:
            full_suites(run)
        machine["load_after"] = os.getloadavg()
        machine["seconds"] = time.monotonic() - started
        args.out.mkdir(parents=True, exist_ok=True)
        paths = report.write(
            args.out,
            machine=machine,
            results=run.results,
            fanout=run.fanout,
            profiles=run.profiles,
            failures=[f.__dict__ for f in run.failures],
            settings={
                "smoke": args.smoke,
                "duration": args.duration,
                "warmup": args.warmup,
                "connections": args.connections,
                "fanout_rate": args.fanout_rate,
                "fanout_events": args.fanout_events,
                "replay": run.replay,
                "tool": "wrk" if args.wrk else "bench.pyload",
                "stuck_shutdowns": run.stuck_shutdowns,
            },
        )
        for path in paths:
            log(f"wrote {path}")
    log(f"done in {time.monotonic() - started:.0f} s")
    if run.failures:
        for failure in run.failures:
            log(f"FAILED: {failure.what}: {failure.why}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
