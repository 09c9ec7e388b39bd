"""`bench/run --scale N`: the orders list at N orders (issue 20).

On a database of N generated orders (bench/scaledata.py), kept across runs when asked
(`--keep-db`: PostgreSQL database `bench_scale_<N>`, or the SQLite file
`bench_scale_<N>.db` in the cache directory), this measures as an ADMIN, with the read
cache off, on a fresh one-worker server, one request at a time:

- each query shape of the issue (page 1, `status: PAID`, `q` a SKU substring, a whole
  email, a whole order id, `page: 50000`, and page 50000 reached with `after` once the
  schema has it), median and p95 over `--scale-requests` requests, each answer checked;
- the same shapes on a small database (`--scale-base`, 10,000 orders) in the same run,
  for the growth ratio;
- the 32-connection cold page throughput (wrk) at N and at 5,000 orders;
- (PostgreSQL) `EXPLAIN (ANALYZE, BUFFERS)` of every statement each shape runs: the app
  runs in this process on a pool that records each statement's text and arguments;
- (PostgreSQL) `order-service migrate` of the newest migration on the N-order database
  (downgraded one step first) while a writer inserts orders back to back: the longest
  time a write waited.

Writes `scale-<backend>-<N>.md` and `.json` into the report directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench import scaledata
from bench.load import LoadSpec, run_load
from bench.measure import graphql_body, json_headers
from bench.processes import REPO, Server, cpu_seconds, log
from bench.runs import Failure, Run
from infra.security import create_access_token

ADMIN_EMAIL = "admin@bench.example.com"
ORDER_FIELDS = (
    "id status version amountCents createdAt items { sku qty unitPriceCents lineTotalCents } "
    "user { id email role }"
)
# The shapes. The email and the order id are a real customer's and a real
# order's at every N (customers_for(N) >= 50 from N = 5,000).
DEEP_PAGE = 50_000
LIMIT = 10


def has_keyset() -> bool:
    """Whether this checkout's schema has the keyset pages of Contract v2 (`after`)."""
    text = (REPO / "schema.graphql").read_text()
    return "nextCursor" in text


def orders_query(keyset: bool) -> str:
    extra = " nextCursor totalIsExact" if keyset else ""
    after_var = ", $after: String" if keyset else ""
    after_arg = ", after: $after" if keyset else ""
    return (
        f"query Orders($limit: Int!, $page: Int!, $status: OrderStatus, $q: String{after_var}) "
        f"{{ orders(limit: $limit, page: $page, status: $status, q: $q{after_arg}) "
        f"{{ total page pages{extra} items {{ {ORDER_FIELDS} }} }} }}"
    )


@dataclass
class Shape:
    key: str
    label: str
    variables: dict[str, Any]
    # Checks one answer (the `orders` object); raises AssertionError when it is wrong.
    check: Callable[[dict[str, Any]], None]


def shapes(n: int, keyset: bool) -> list[Shape]:
    customers = scaledata.customers_for(n)
    customer = min(77, customers)
    email = f"user{customer}@example.com"
    order_id = min(424242, n // 2 + 1)
    deep_rows = max(0, min(LIMIT, n - (DEEP_PAGE - 1) * LIMIT))

    def page1(page: dict[str, Any]) -> None:
        assert page["total"] == n, (page["total"], n)
        assert len(page["items"]) == min(LIMIT, n)
        assert int(page["items"][0]["id"]) == n  # newest first: the last generated

    def paid(page: dict[str, Any]) -> None:
        assert page["items"] and all(o["status"] == "PAID" for o in page["items"])

    def widget(page: dict[str, Any]) -> None:
        assert page["items"]
        for o in page["items"]:
            assert any("WIDGET" in line["sku"] for line in o["items"]), o

    def by_email(page: dict[str, Any]) -> None:
        assert page["items"] and all(o["user"]["email"] == email for o in page["items"])

    def by_id(page: dict[str, Any]) -> None:
        assert str(order_id) in [o["id"] for o in page["items"]], page["items"]

    def deep(page: dict[str, Any]) -> None:
        assert len(page["items"]) == deep_rows, (len(page["items"]), deep_rows)

    base = {"limit": LIMIT, "page": 1}
    out = [
        Shape("page1", "page 1, no filter", base, page1),
        Shape("paid", "`status: PAID`", {**base, "status": "PAID"}, paid),
        Shape("sku", '`q: "widget"` (SKU substring)', {**base, "q": "widget"}, widget),
        Shape("email", f'`q: "{email}"` (an email)', {**base, "q": email}, by_email),
        Shape("order_id", f'`q: "{order_id}"` (an order id)', {**base, "q": str(order_id)}, by_id),
        Shape("deep", f"`page: {DEEP_PAGE}`", {**base, "page": DEEP_PAGE}, deep),
    ]
    if keyset:
        # The cursor is filled in by `keyset_cursor` (the page before, read once).
        out.append(Shape("deep_after", f"page {DEEP_PAGE} reached with `after`", {**base}, deep))
    return out


# -- the database -------------------------------------------------------------------------


@dataclass
class ScaleDb:
    backend: str  # "postgresql" or "sqlite"
    n: int
    url: str  # SQLAlchemy URL
    name: str  # PostgreSQL database name, or the SQLite file
    kept: bool
    generated: scaledata.Generated | None  # None: reused
    admin_id: int = 0


MARK = "bench scale v1 n={n}"


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "order-service-bench"


async def _pg_admin(run: Run) -> asyncpg.Connection:
    return await asyncpg.connect(run.admin_dsn)


async def _pg_database(run: Run, n: int, keep: bool, *, tag: str) -> ScaleDb:
    from models.migrate import upgrade_to_head

    name = f"bench_scale_{n}" if keep else f"bench_{run.run_id}_{tag}"
    base = run.admin_dsn.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    conn = await _pg_admin(run)
    try:
        comment = await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
        if keep and comment == MARK.format(n=n):
            await conn.close()
            log(f"scale: reusing database {name} ({n:,} orders); migrating it to head")
            await upgrade_to_head(url)
            return ScaleDb("postgresql", n, url, name, keep, None)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        if not conn.is_closed():
            await conn.close()
    await upgrade_to_head(url)
    log(f"scale: generating {n:,} orders into {name}")
    generated = await scaledata.generate_pg(url.replace("+asyncpg", ""), n, progress=log)
    conn = await _pg_admin(run)
    try:
        await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{MARK.format(n=n)}'")
    finally:
        await conn.close()
    return ScaleDb("postgresql", n, url, name, keep, generated)


async def _sqlite_database(run: Run, n: int, keep: bool, *, tag: str) -> ScaleDb:
    from models.migrate import upgrade_to_head

    folder = _cache_dir() if keep else run.workdir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"bench_scale_{n}.db" if keep else f"scale-{tag}.db")
    mark = folder / f"{path.name}.done"
    url = f"sqlite+aiosqlite:///{path}"
    if keep and path.exists() and mark.exists() and mark.read_text() == MARK.format(n=n):
        log(f"scale: reusing {path} ({n:,} orders); migrating it to head")
        await upgrade_to_head(url)
        return ScaleDb("sqlite", n, url, str(path), keep, None)
    for p in (path, mark):
        p.unlink(missing_ok=True)
    await upgrade_to_head(url)
    log(f"scale: generating {n:,} orders into {path}")
    generated = scaledata.generate_sqlite(str(path), n, progress=log)
    mark.write_text(MARK.format(n=n))
    return ScaleDb("sqlite", n, url, str(path), keep, generated)


async def open_database(run: Run, n: int, *, sqlite: bool, keep: bool, tag: str) -> ScaleDb:
    started = time.monotonic()
    opener = _sqlite_database if sqlite else _pg_database
    db = await opener(run, n, keep, tag=tag)
    db.admin_id = await _admin(db)
    if db.generated:
        total = time.monotonic() - started
        log(f"scale: {n:,} orders ready in {total:.0f} s ({db.generated.seconds})")
    return db


async def _admin(db: ScaleDb) -> int:
    sql = (
        "INSERT INTO users (email, password_hash, role, created_at) VALUES "
        "('{e}', '!unusable', 'ADMIN', {now}) ON CONFLICT (email) DO UPDATE SET role = 'ADMIN' "
        "RETURNING id"
    )
    if db.backend == "sqlite":
        conn = sqlite3.connect(db.name)
        try:
            with conn:
                now = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
                return int(conn.execute(sql.format(e=ADMIN_EMAIL, now=now)).fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.url.replace("+asyncpg", ""))
    try:
        return int(await pg.fetchval(sql.format(e=ADMIN_EMAIL, now="now()")))
    finally:
        await pg.close()


async def drop(run: Run, db: ScaleDb) -> None:
    if db.kept:
        return
    if db.backend == "sqlite":
        Path(db.name).unlink(missing_ok=True)
        return
    conn = await _pg_admin(run)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- single requests ----------------------------------------------------------------------


def token(run: Run, db: ScaleDb) -> str:
    return "Bearer " + create_access_token(
        db.admin_id, "ADMIN", secret=run.secret_key, expires_minutes=240
    )


def start_server(run: Run, db: ScaleDb, name: str) -> Server:
    env = {"CACHE_TTL_SECONDS": "0", "DATABASE_URL": db.url}
    return run.start_server(name, workers=1, pinned=True, env=env)


def _ask(client: httpx.Client, query: str, variables: dict[str, Any], headers: Any) -> Any:
    response = client.post("/graphql", content=graphql_body(query, variables), headers=headers)
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise AssertionError(f"HTTP {response.status_code}: {str(body)[:500]}")
    return body["data"]["orders"]


def keyset_cursor(client: httpx.Client, query: str, headers: Any) -> str:
    """The cursor that starts page DEEP_PAGE: page DEEP_PAGE - 1's nextCursor."""
    page = _ask(client, query, {"limit": LIMIT, "page": DEEP_PAGE - 1}, headers)
    return str(page["nextCursor"])


def time_shapes(run: Run, db: ScaleDb, requests: int) -> list[dict[str, Any]]:
    """Every shape, one request at a time, on a fresh server: median and p95 (ms)."""
    keyset = has_keyset()
    query = orders_query(keyset)
    headers = json_headers(token(run, db))
    server = start_server(run, db, f"scale-{db.backend}-{db.n}")
    results: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=900) as client:
            # The server's first requests pay for imports and caches of their own.
            for _ in range(20):
                _ask(client, query, {"limit": LIMIT, "page": 1}, headers)
            for shape in shapes(db.n, keyset):
                variables = dict(shape.variables)
                if shape.key == "deep_after":
                    cursor = keyset_cursor(client, query, headers)
                    if cursor == "None":
                        log(f"scale {db.n:,}: no page {DEEP_PAGE}, no cursor: skipped")
                        continue
                    variables["after"] = cursor
                try:
                    started = time.perf_counter()
                    first = _ask(client, query, variables, headers)
                    first_ms = (time.perf_counter() - started) * 1000
                    shape.check(first)
                except AssertionError as exc:
                    run.failures.append(Failure(f"scale {db.n} {shape.key}", str(exc)[:800]))
                    log(f"scale {db.n:,} {shape.key}: wrong answer: {str(exc)[:300]}")
                    continue
                times: list[float] = []
                slow = first_ms > 1000 * run.args.scale_seconds / 5
                if slow:
                    # Five would take past the budget: the first (checked) one is the figure.
                    times.append(first_ms)
                else:
                    for _ in range(2):
                        _ask(client, query, variables, headers)
                budget = time.monotonic() + run.args.scale_seconds
                while (
                    not slow
                    and len(times) < requests
                    and (len(times) < 5 or time.monotonic() < budget)
                ):
                    started = time.perf_counter()
                    _ask(client, query, variables, headers)
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                row = {
                    "backend": db.backend,
                    "n": db.n,
                    "shape": shape.key,
                    "label": shape.label,
                    "median_ms": statistics.median(times),
                    "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
                    "requests": len(times),
                    "total": first["total"],
                    "total_is_exact": first.get("totalIsExact"),
                    "slow": slow,
                }
                results.append(row)
                log(
                    f"scale {db.backend} {db.n:,} {shape.key}: median {row['median_ms']:.1f} ms, "
                    f"p95 {row['p95_ms']:.1f} ms (total {first['total']:,})"
                )
    finally:
        run.stop_server(server)
    return results


def throughput(run: Run, db: ScaleDb) -> dict[str, Any]:
    """The cold page 1 (no filter, as the admin) under `--connections` connections."""
    query = orders_query(has_keyset())
    body = graphql_body(query, {"limit": LIMIT, "page": 1})
    spec = LoadSpec("POST", "/graphql", json_headers(token(run, db)), body)
    server = start_server(run, db, f"scale-load-{db.backend}-{db.n}")
    try:
        for seconds in (run.args.warmup, run.args.duration):
            if seconds <= 0:
                continue
            # The server's CPU, and that of its PostgreSQL backends (the same host).
            backends = asyncio.run(_backend_pids(db)) if db.backend == "postgresql" else []
            pids = server.pids()
            app_before, db_before = cpu_seconds(pids), cpu_seconds(backends)
            result = run_load(
                spec,
                server.url,
                duration=seconds,
                connections=run.args.connections,
                cpus="1",
                workdir=run.workdir,
                use_wrk=run.args.wrk,
            )
            app_cpu, db_cpu = cpu_seconds(pids) - app_before, cpu_seconds(backends) - db_before
    finally:
        run.stop_server(server)
    requests = max(1, result.requests)
    row = {
        "backend": db.backend,
        "n": db.n,
        **result.as_dict(),
        "app_cpu_us": 1e6 * app_cpu / requests,
        "db_cpu_us": 1e6 * db_cpu / requests if backends else None,
        "db_backends": len(backends),
    }
    log(
        f"scale {db.backend} {db.n:,} page 1 x{run.args.connections}: {result.rps:,.0f} req/s, "
        f"p99 {result.p99_ms:.1f} ms, errors {result.errors}; CPU a request: server "
        f"{row['app_cpu_us']:,.0f} µs"
        + (f", PostgreSQL {row['db_cpu_us']:,.0f} µs" if backends else "")
    )
    if result.errors:
        run.failures.append(Failure(f"scale throughput {db.n}", f"{result.errors} errors"))
    return row


async def _backend_pids(db: ScaleDb) -> list[int]:
    """The PostgreSQL backends serving the service's pool on this database."""
    conn = await asyncpg.connect(db.url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
            "AND application_name = 'order-service'",
            db.name,
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


# -- the statements and their plans (PostgreSQL) -----------------------------------------


_ORDERS = re.compile(r"\borders\b")
# The request's lookup of its caller (resolvers/context.py): by id from `users` alone.
_CALLER = re.compile(r"FROM users\s+WHERE users\.id = \$1")


@dataclass
class _Recording:
    seen: list[tuple[str, tuple[Any, ...]]]
    # Dry: statements on the orders are noted, not run (they answer no rows): for the
    # shapes too slow to run again.
    dry: bool = False


class _RecordingConnection:
    """An asyncpg connection that notes each statement's text and arguments."""

    def __init__(self, conn: asyncpg.Connection, rec: _Recording) -> None:
        self._conn = conn
        self._rec = rec

    def _skip(self, query: str, args: tuple[Any, ...]) -> bool:
        self._rec.seen.append((query, args))
        return self._rec.dry and bool(_ORDERS.search(query))

    async def fetch(self, query: str, *args: Any, **kw: Any) -> Any:
        return [] if self._skip(query, args) else await self._conn.fetch(query, *args, **kw)

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> Any:
        return None if self._skip(query, args) else await self._conn.fetchrow(query, *args, **kw)

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        return None if self._skip(query, args) else await self._conn.fetchval(query, *args, **kw)

    async def execute(self, query: str, *args: Any, **kw: Any) -> Any:
        return "" if self._skip(query, args) else await self._conn.execute(query, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _RecordingPool:
    def __init__(self, pool: Any, rec: _Recording) -> None:
        self._pool = pool
        self._rec = rec

    async def acquire(self) -> Any:
        return _RecordingConnection(await self._pool.acquire(), self._rec)

    def release(self, conn: Any, *, broken: bool = False) -> None:
        self._pool.release(conn._conn, broken=broken)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


@contextlib.asynccontextmanager
async def _app_in_process(run: Run, db: ScaleDb) -> AsyncIterator[tuple[Any, _Recording]]:
    from infra.settings import Settings
    from server.app import create_app

    settings = Settings(
        database_url=db.url,
        redis_url=None,
        app_env="test",
        cache_ttl_seconds=0,
        secret_key=run.secret_key,
    )
    app = create_app(settings)
    rec = _Recording(seen=[])
    async with app.router.lifespan_context(app):
        database = app.state.services.db
        # The request pool, wrapped: what each request runs is noted (bench only).
        database._pg_pool = _RecordingPool(database._pg(), rec)
        yield app, rec


async def explain_shapes(run: Run, db: ScaleDb, slow: set[str]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement each shape runs, after two runs of
    the shape (the plans of a warmed-up server); for the `slow` shapes, the statements
    are noted without running them and only planned (EXPLAIN without ANALYZE)."""
    keyset = has_keyset()
    query = orders_query(keyset)
    headers = json_headers(token(run, db))
    out: list[dict[str, Any]] = []
    async with _app_in_process(run, db) as (app, rec):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=900
        ) as client:

            async def ask(variables: dict[str, Any]) -> Any:
                r = await client.post(
                    "/graphql", content=graphql_body(query, variables), headers=headers
                )
                body = r.json()
                if body.get("errors") and not rec.dry:
                    raise AssertionError(str(body["errors"])[:500])
                return (body.get("data") or {}).get("orders")

            explain = await asyncpg.connect(db.url.replace("+asyncpg", ""))
            try:
                for shape in shapes(db.n, keyset):
                    variables = dict(shape.variables)
                    if shape.key == "deep_after":
                        page = await ask({"limit": LIMIT, "page": DEEP_PAGE - 1})
                        if not page.get("nextCursor"):
                            continue
                        variables["after"] = page["nextCursor"]
                    rec.dry = shape.key in slow
                    if not rec.dry:
                        await ask(variables)
                    rec.seen.clear()
                    with contextlib.suppress(Exception):  # a dry run's answer may break
                        await ask(variables)
                    rec.dry = False
                    how = "EXPLAIN " if shape.key in slow else "EXPLAIN (ANALYZE, BUFFERS) "
                    # Every statement of the request (the catalog's and the users' matches
                    # of a search too) but the caller's own lookup, which every request runs.
                    ran = [(t, a) for t, a in rec.seen if not _CALLER.search(t)]
                    for text, args in ran:
                        rows = await explain.fetch(how + text, *args)
                        out.append(
                            {
                                "shape": shape.key,
                                "label": shape.label,
                                "statement": text,
                                "args": [repr(a) for a in args],
                                "plan": "\n".join(r[0] for r in rows),
                                "analyzed": shape.key not in slow,
                            }
                        )
            finally:
                await explain.close()
    return out


# -- migrating under writes (PostgreSQL) --------------------------------------------------


def _revisions(url: str) -> tuple[str, str | None]:
    from alembic.script import ScriptDirectory

    from models.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_revision("head")
    assert head is not None
    previous = head.down_revision
    return head.revision, previous if isinstance(previous, str) else None


def _downgrade(url: str, revision: str) -> None:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from alembic import command; from models.migrate import alembic_config; "
        "from models.db import null_pool_engine; import asyncio\n"
        "url, rev = sys.argv[1], sys.argv[2]\n"
        "async def main():\n"
        "    engine = null_pool_engine(url)\n"
        "    async with engine.connect() as conn:\n"
        "        def down(c):\n"
        "            cfg = alembic_config(url); cfg.attributes['connection'] = c\n"
        "            command.downgrade(cfg, rev)\n"
        "        await conn.run_sync(down)\n"
        "        await conn.commit()\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n",
        url,
        revision,
    ]
    subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)


WRITE_ORDER = (
    "INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, "
    "amount_cents, created_at, updated_at) VALUES ($1, 'PENDING', 1, $2, 'stall', 3000, "
    "now(), now()) RETURNING id"
)
WRITE_LINES = (
    "INSERT INTO order_lines (order_id, sku, qty, unit_price_cents) "
    "VALUES ($1, 'WIDGET-001', 2, 1000), ($1, 'GADGET-002', 1, 1000)"
)


async def migrate_under_writes(run: Run, db: ScaleDb) -> dict[str, Any]:
    """Downgrade the newest migration (or to `--scale-migrate-from`), then run
    `order-service migrate` while one writer inserts orders (an order and its lines per
    transaction, as createOrder writes them) back to back: how long the migration took and
    the longest any write waited."""
    head, previous = _revisions(db.url)
    previous = run.args.scale_migrate_from or previous
    if previous is None:
        return {"skipped": "the newest migration is the first"}
    log(f"scale: downgrading {head} -> {previous} on {db.name}")
    started = time.monotonic()
    await asyncio.to_thread(_downgrade, db.url, previous)
    downgrade_s = time.monotonic() - started
    dsn = db.url.replace("+asyncpg", "")
    writer = await asyncpg.connect(dsn)
    stop = asyncio.Event()
    waits: list[tuple[float, float]] = []  # (started at, seconds)
    errors: list[str] = []

    async def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            t = time.monotonic()
            try:
                async with writer.transaction():
                    order_id = await writer.fetchval(
                        WRITE_ORDER, db.admin_id, f"stall-{run.run_id}-{i}"
                    )
                    await writer.execute(WRITE_LINES, order_id)
            except Exception as exc:  # a write the migration broke: reported, not hidden
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
            waits.append((t, time.monotonic() - t))

    task = asyncio.create_task(write())
    try:
        await asyncio.sleep(1.0)
        env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": db.url}
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "order-service"),
            "migrate",
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        t1 = time.monotonic()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await task
        await writer.close()
    during = [w for s, w in waits if s + w >= t0 and s <= t1]
    longest = max(during, default=0.0)
    result: dict[str, Any] = {
        "head": head,
        "from": previous,
        "downgrade_s": downgrade_s,
        "migrate_s": t1 - t0,
        "migrate_rc": proc.returncode,
        "migrate_output": output.decode(errors="replace")[-2000:],
        "writes_during": len(during),
        "longest_write_wait_s": longest,
        "median_write_ms": 1000 * statistics.median(during) if during else 0.0,
        "write_errors": errors[:5],
        "write_error_count": len(errors),
    }
    log(
        f"scale: migrate {previous} -> {head} on {db.n:,} orders took {t1 - t0:.1f} s; "
        f"{len(during)} writes meanwhile, the longest waited {longest * 1000:.0f} ms; "
        f"{len(errors)} failed"
    )
    if proc.returncode != 0:
        run.failures.append(Failure("scale migrate", result["migrate_output"][-500:]))
    if longest > 1.0:
        run.failures.append(Failure("scale migrate", f"a write waited {longest:.2f} s"))
    await _forget_writes(db)
    return result


async def _forget_writes(db: ScaleDb) -> None:
    """Delete the writer's orders (the admin's) and recount the derived tables, so that a
    kept database stays what the generator made."""
    conn = await asyncpg.connect(db.url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM orders WHERE user_id = $1", db.admin_id)
            await scaledata.recount_pg(conn)
        # The whole database: the recount leaves the counts' tables full of dead rows,
        # which the next run's totals would read (745 buffers for page 1 at 10M, not 88).
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


# -- the run -------------------------------------------------------------------------------


def run_scale(run: Run) -> dict[str, Any]:
    args = run.args
    sqlite = args.sqlite
    backend = "sqlite" if sqlite else "postgresql"
    report: dict[str, Any] = {
        "backend": backend,
        "n": args.scale,
        "base": args.scale_base,
        "keyset": has_keyset(),
        "requests": args.scale_requests,
        "seconds": args.scale_seconds,
        "load_before": os.getloadavg(),
        "shapes": [],
        "throughput": [],
        "explain": [],
    }
    small = [(args.scale_base, True, False)]
    if args.duration > 0:
        small.append((args.scale_load_base, False, True))
    for size, timed, loaded in [*small, (args.scale, True, args.duration > 0)]:
        big = size == args.scale
        keep = args.keep_db and big
        db = asyncio.run(open_database(run, size, sqlite=sqlite, keep=keep, tag=str(size)))
        try:
            if db.generated:
                report.setdefault("generated", {})[str(size)] = {
                    "orders": db.generated.orders,
                    "customers": db.generated.customers,
                    "lines": db.generated.lines,
                    "seconds": db.generated.seconds,
                }
            if timed:
                report["shapes"] += time_shapes(run, db, args.scale_requests)
            if loaded:
                report["throughput"].append(throughput(run, db))
            if big and not sqlite:
                slow = {r["shape"] for r in report["shapes"] if r["n"] == size and r["slow"]}
                report["explain"] = asyncio.run(explain_shapes(run, db, slow))
                if args.scale_migrate:
                    report["migrate"] = asyncio.run(migrate_under_writes(run, db))
            if big:
                report["database"] = db.name if db.kept else ""
        finally:
            asyncio.run(drop(run, db))
    report["load_after"] = os.getloadavg()
    return report


def _fmt(ms: float) -> str:
    return f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    n, base, backend = report["n"], report["base"], report["backend"]
    out = [
        f"# Orders at scale: {n:,} orders on {backend}",
        "",
        "Written by `bench/run --scale` (bench/workloads/scale.py); every figure is from "
        f"this run. Load average before {report['load_before'][0]:.1f}, "
        f"after {report['load_after'][0]:.1f} (2 cores, shared).",
        "",
        "Single requests as an ADMIN, read cache off, a fresh one-worker server (20 "
        "requests of page 1 first), one request at a time: per shape 3 unmeasured, then "
        f"up to {report.get('requests', 50)} (at least 5, at most "
        f"{report.get('seconds', 30):.0f} s of them; `n` below), ms, client side:",
        "",
        f"| query shape | median at {base:,} | p95 | median at {n:,} | p95 | n | growth | total |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["n"], r["shape"]): r for r in report["shapes"]}
    for key in dict.fromkeys(r["shape"] for r in report["shapes"]):
        small, big = by.get((base, key)), by.get((n, key))
        ref = big or small
        assert ref is not None
        cells = [ref["label"]]
        for r in (small, big):
            cells += [_fmt(r["median_ms"]), _fmt(r["p95_ms"])] if r else ["", ""]
        cells.append(str(big["requests"]) if big else "")
        growth = f"{big['median_ms'] / small['median_ms']:.1f}x" if small and big else ""
        exact = "" if not big or big.get("total_is_exact") in (None, True) else " (estimate)"
        cells += [growth, f"{big['total']:,}{exact}" if big else ""]
        out.append("| " + " | ".join(cells) + " |")
    if report["throughput"]:
        out += [
            "",
            "Cold page 1 (no filter, as the admin) under "
            f"{report['throughput'][0].get('connections', 32)} connections:",
            "",
            "| orders | req/s | p50 ms | p99 ms | errors | server CPU µs/req "
            "| PostgreSQL CPU µs/req |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for t in report["throughput"]:
            pg = f"{t['db_cpu_us']:,.0f}" if t.get("db_cpu_us") is not None else ""
            out.append(
                f"| {t['n']:,} | {t['rps']:,.0f} | {t['p50_ms']:.1f} | {t['p99_ms']:.1f} "
                f"| {t['errors']} | {t.get('app_cpu_us', 0):,.0f} | {pg} |"
            )
        if len(report["throughput"]) == 2:
            a, b = report["throughput"]
            out.append(f"\nAt {b['n']:,} / at {a['n']:,}: {b['rps'] / a['rps']:.2f}.")
    if "generated" in report:
        out += ["", "Generated in this run:", ""]
        for size, g in report["generated"].items():
            secs = ", ".join(f"{k} {v:.1f} s" for k, v in g["seconds"].items())
            out.append(
                f"- {int(size):,} orders, {g['lines']:,} lines, {g['customers']:,} customers: "
                f"{secs}"
            )
    if report.get("migrate"):
        m = report["migrate"]
        out += ["", "## `order-service migrate` under writes", ""]
        if "skipped" in m:
            out.append(f"Skipped: {m['skipped']}.")
        else:
            out.append(
                f"`{m['from']}` → `{m['head']}` on {n:,} orders while one writer inserted an "
                f"order and its lines per transaction back to back: the migration took "
                f"{m['migrate_s']:.1f} s (exit {m['migrate_rc']}); {m['writes_during']:,} writes "
                f"meanwhile, median {m['median_write_ms']:.1f} ms, the longest waited "
                f"**{m['longest_write_wait_s'] * 1000:,.0f} ms**; "
                f"{m['write_error_count']} failed."
            )
    if report["explain"]:
        out += ["", "## Plans: `EXPLAIN (ANALYZE, BUFFERS)` of each shape's statements", ""]
        out.append(
            "Each statement as the service ran it (recorded in process, with its arguments), "
            "after two runs of the shape. The database's own time for each:"
        )
        out += ["", "| query shape | statements | execution ms (sum) | buffers hit / read |"]
        out.append("| --- | ---: | ---: | ---: |")
        for plans in _by_shape(report["explain"]).values():
            ms = sum(_execution_ms(e["plan"]) for e in plans)
            hit = sum(_buffers(e["plan"], "hit") for e in plans)
            read = sum(_buffers(e["plan"], "read") for e in plans)
            out.append(f"| {plans[0]['label']} | {len(plans)} | {ms:,.2f} | {hit:,} / {read:,} |")
        for e in report["explain"]:
            only = "" if e.get("analyzed", True) else " (planned only: too slow to run again)"
            out += [
                "",
                f"### {e['label']}{only}",
                "",
                "```sql",
                e["statement"],
                "```",
                "",
                f"Arguments: {', '.join(e['args'])}",
                "",
                "```",
                e["plan"],
                "```",
            ]
    return "\n".join(out) + "\n"


def _by_shape(explains: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in explains:
        out.setdefault(e["shape"], []).append(e)
    return out


def _execution_ms(plan: str) -> float:
    found = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    return float(found.group(1)) if found else 0.0


def _buffers(plan: str, kind: str) -> int:
    """Shared buffers `kind` ("hit", "read") of the plan's top node."""
    found = re.search(rf"Buffers: shared[^\n]*?\b{kind}=(\d+)", plan)
    return int(found.group(1)) if found else 0


def write_report(out: Path, report: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scale-{report['backend']}-{report['n']}"
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    md.write_text(markdown(report))
    js.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return [md, js]
