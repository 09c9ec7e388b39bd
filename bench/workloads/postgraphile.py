"""PostGraphile beside the service (issue 19): the peer a team would pick instead for a
GraphQL API over PostgreSQL, on the run's database, the same page, the same load.

PostGraphile is pinned in bench/postgraphile/package-lock.json and installed there with
`npm ci` when missing. Without Node, npm or the install, the run says so (a Failure line)
and goes on without it.

Two servers, one after the other, each one process pinned to CPU 0 like the reference
servers:

- **without auth**: connected as the run's database user, as the issue first measured it;
- **with JWT auth**: connected as an authenticator role of its own (LOGIN, NOINHERIT), with
  `--jwt-secret` (the run's secret) and `--default-role` (an anonymous role with no
  grants); a token's `role` claim names the role the request runs as (SELECT on the
  three tables the page reads) and every claim becomes `jwt.claims.<name>`, the way a
  deployment of it is set up. So each request runs `BEGIN; select set_config(...);
  <the query>; COMMIT`: verified from PostgreSQL's statement log on a probe instance
  before the measurements (`log_statement = all` is set on the probe's own login role
  only), as is a token with a wrong signature being refused and the page being refused
  to a request without a token.

The roles are created for the run and dropped at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt

from bench.load import LoadSpec, run_load
from bench.measure import Workload, graphql_body, json_headers, measure
from bench.processes import REPO, Server, cpu_seconds, free_port, log, raise_nofile
from bench.runs import Failure, Run

HERE = REPO / "bench" / "postgraphile"
VERSION = "4.14.1"
CLI = HERE / "node_modules" / "postgraphile" / "cli.js"
# V8 compiles PostGraphile's hot paths over the first tens of thousands of requests: its
# CPU per page fell from 2,079 to 1,445 to 1,045 µs over three rounds after 10 s of load,
# and from 1,600 to 1,000 µs over 15 s, flat after that. So each workload is loaded in
# steps until two steps in a row save nothing, before the harness's own warm-up.
WARMUP_STEP_SECONDS = 5.0
WARMUP_STEPS = 12
# The comparison's rows (interleaved rounds, medians): the service's are side "graphql".
PEERS = "peers"
ROUNDS = 3
SIDE_OPEN = "postgraphile"
SIDE_AUTH = "postgraphile-auth"

# The service's page (bench.measure.ORDERS_QUERY, limit 10, asked by its owner): the
# newest 10 of the caller's orders (ties by id, newest first) with their lines in id
# order, the owner and the count.
PAGE_QUERY = (
    "query Page($userId: Int!, $first: Int!) { allOrders(condition: {userId: $userId}, "
    "orderBy: [CREATED_AT_DESC, ID_DESC], first: $first) { totalCount nodes { id status "
    "version amountCents createdAt orderLinesByOrderId(orderBy: ID_ASC) { nodes { sku qty "
    "unitPriceCents } } userByUserId { id email role } } } }"
)
FLAGS = [
    "--disable-graphiql",
    "--disable-query-log",
    "--simple-collections",
    "omit",
    "--legacy-relations",
    "omit",
]


def install() -> str | None:
    """PostGraphile's CLI from bench/postgraphile/node_modules (`npm ci` when it is missing
    or not the locked version); the reason when it cannot be had."""
    if shutil.which("node") is None:
        return "node is not installed"
    installed = HERE / "node_modules" / "postgraphile" / "package.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(installed.read_text())["version"] == VERSION and CLI.exists():
            return None
    if shutil.which("npm") is None:
        return "npm is not installed"
    log(f"installing PostGraphile {VERSION} into {HERE / 'node_modules'} (npm ci)")
    try:
        out = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm ci failed: {exc}"
    if out.returncode != 0 or not CLI.exists():
        return f"npm ci failed ({out.returncode}): {(out.stderr or out.stdout)[-300:]}"
    return None


class Roles:
    """The run's PostgreSQL roles for PostGraphile with auth (cluster-wide names, so
    suffixed with a random tag, and dropped at the end)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.authenticator = f"bench_pgl_authn_{tag}"
        self.probe = f"bench_pgl_probe_{tag}"
        self.user = f"bench_pgl_user_{tag}"
        self.anon = f"bench_pgl_anon_{tag}"
        self.password = secrets.token_urlsafe(16)

    def all(self) -> list[str]:
        return [self.authenticator, self.probe, self.user, self.anon]

    async def create(self, run: Run) -> None:
        conn = await asyncpg.connect(run.db_url)
        try:
            for role in (self.user, self.anon):
                await conn.execute(f"CREATE ROLE {role} NOLOGIN")
            for role in (self.authenticator, self.probe):
                await conn.execute(f"CREATE ROLE {role} LOGIN NOINHERIT PASSWORD '{self.password}'")
                await conn.execute(f"GRANT {self.user}, {self.anon} TO {role}")
            # Only the probe's sessions log their statements.
            await conn.execute(f"ALTER ROLE {self.probe} SET log_statement = 'all'")
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {self.user}, {self.anon}")
            await conn.execute(f"GRANT SELECT ON orders, order_lines, users TO {self.user}")
        finally:
            await conn.close()

    async def drop(self, run: Run) -> None:
        conn = await asyncpg.connect(run.db_url)
        try:
            roles = ", ".join(self.all())
            existing = await conn.fetchval(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", self.all()
            )
            if existing:
                await conn.execute(f"DROP OWNED BY {roles}")
                await conn.execute(f"DROP ROLE IF EXISTS {roles}")
        finally:
            await conn.close()

    def dsn(self, run: Run, login: str) -> str:
        base = run.db_url.split("://", 1)[1].split("@", 1)[1]
        return f"postgres://{login}:{self.password}@{base}"

    def token(self, run: Run, user_id: int, *, secret: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "user_id": user_id,
            "role": self.user,
            "aud": "postgraphile",
            "iat": now,
            "exp": now + 4 * 3600,
        }
        return "Bearer " + jwt.encode(claims, secret or run.secret_key, algorithm="HS256")


def launch(run: Run, name: str, connection: str, extra: list[str]) -> Server:
    port = free_port()
    log_path = run.workdir / f"server-{name}.log"
    cmd = ["taskset", "-c", "0", "node", str(CLI), "--connection", connection]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *FLAGS, *extra]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            cmd,
            cwd=HERE,
            env={**os.environ, "NODE_ENV": "production"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=raise_nofile,
        )
    server = Server(name, 1, True, port, process, log_path)
    run.servers.append(server)
    deadline = time.monotonic() + 60
    body = graphql_body("{ __typename }", {})
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{server.url}/graphql", content=body, headers=json_headers())
            if r.status_code in (200, 401):  # 401: up, and wanting a token
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    log(f"server {name}: PostGraphile {VERSION}, one process pinned to CPU 0, port {port}")
    return server


def as_service_page(body: dict[str, Any], limit: int) -> dict[str, Any]:
    """PostGraphile's answer to PAGE_QUERY in the shape of the service's answer to
    ORDERS_QUERY (what a client of either would see)."""
    if body.get("errors") or not body.get("data"):
        raise AssertionError(f"PostGraphile answered errors: {str(body)[:500]}")
    page = body["data"]["allOrders"]
    total = page["totalCount"]

    def when(value: str) -> str:
        at = datetime.fromisoformat(value)
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()

    items = [
        {
            "id": str(o["id"]),
            "status": o["status"],
            "version": o["version"],
            "amountCents": o["amountCents"],
            "createdAt": when(o["createdAt"]),
            "items": [
                {
                    "sku": line["sku"],
                    "qty": line["qty"],
                    "unitPriceCents": line["unitPriceCents"],
                    "lineTotalCents": line["qty"] * line["unitPriceCents"],
                }
                for line in o["orderLinesByOrderId"]["nodes"]
            ],
            "user": {
                "id": str(o["userByUserId"]["id"]),
                "email": o["userByUserId"]["email"],
                "role": o["userByUserId"]["role"],
            },
        }
        for o in page["nodes"]
    ]
    pages = -(-total // limit) if total else 0
    return {"data": {"orders": {"total": total, "page": 1, "pages": pages, "items": items}}}


def workloads(run: Run, side: str, headers: dict[str, str]) -> list[Workload]:
    """The page (with `headers`: the owner's token with auth on) and `{ __typename }`
    (without a token, as the service's overhead workload sends it), measured as the
    reference servers' are."""
    typename = graphql_body("{ __typename }", {})
    page_body = graphql_body(PAGE_QUERY, {"userId": run.users["reader"], "first": 10})

    def sample_typename(url: str) -> None:
        r = httpx.post(url + "/graphql", content=typename, headers=json_headers())
        assert r.status_code == 200 and r.json() == {"data": {"__typename": "Query"}}, r.text

    def sample_page(url: str) -> None:
        from bench.database import analyze

        asyncio.run(analyze(run))
        r = httpx.post(url + "/graphql", content=page_body, headers=headers)
        assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}"
        run.check_page(side, as_service_page(r.json(), 10))

    return [
        Workload(
            "overhead",
            "trivial request",
            side,
            LoadSpec("POST", "/graphql", json_headers(), typename),
            sample_typename,
            count_xacts=side == SIDE_AUTH,  # without auth it reads nothing
        ),
        Workload(
            "reads_cold",
            "orders(limit: 10)",
            side,
            LoadSpec("POST", "/graphql", headers, page_body),
            sample_page,
            count_xacts=True,
        ),
    ]


# A statement in PostgreSQL's log (log_statement = all): simple or extended protocol.
# Whatever log_line_prefix holds, the backend's pid is in brackets before "LOG:".
LOGGED = re.compile(r"\[(\d+)\][^\[]*?\bLOG:  (?:statement|execute [^:]*): (.*)")


def server_log(admin_dsn: str) -> Path | None:
    """PostgreSQL's log file when it is a file this process can read (a backend's stderr)."""

    async def stderr_of_a_backend() -> Path:
        conn = await asyncpg.connect(admin_dsn)
        try:
            pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
            return Path(os.readlink(f"/proc/{pid}/fd/2"))
        finally:
            await conn.close()

    with contextlib.suppress(OSError, asyncpg.PostgresError):
        path = asyncio.run(stderr_of_a_backend())
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None


def probe(run: Run, roles: Roles, requests: int = 20) -> dict[str, Any]:
    """A PostGraphile with auth on, connected as the probe role (its statements logged):
    what it runs for each page, and what it does with bad or missing tokens."""
    server = launch(
        run,
        "postgraphile-probe",
        roles.dsn(run, roles.probe),
        ["--jwt-secret", run.secret_key, "--default-role", roles.anon],
    )
    try:
        url = server.url + "/graphql"
        page_body = graphql_body(PAGE_QUERY, {"userId": run.users["reader"], "first": 10})
        good = json_headers(roles.token(run, run.users["reader"]))
        # A token signed with another secret is refused before any statement.
        forged = json_headers(roles.token(run, run.users["reader"], secret="not-" + run.secret_key))
        r = httpx.post(url, content=page_body, headers=forged)
        assert r.status_code in (400, 401, 403) and r.json().get("errors"), r.text
        assert not (r.json().get("data") or {}).get("allOrders"), "a forged token was served"
        forged_status = r.status_code
        # Without a token the request runs as the default role, which may not read orders.
        r = httpx.post(url, content=page_body, headers=json_headers())
        assert r.json().get("errors") and "permission denied" in r.text, r.text
        httpx.post(url, content=page_body, headers=good)  # the pool's first connection
        logfile = server_log(run.admin_dsn)

        async def probe_pids() -> set[int]:
            conn = await asyncpg.connect(run.admin_dsn)
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE usename = $1", roles.probe
                )
                return {int(row["pid"]) for row in rows}
            finally:
                await conn.close()

        def statements(
            body: str, check: Callable[[httpx.Response], None], headers: dict[str, str]
        ) -> list[str]:
            """What the probe's sessions ran for `requests` requests, from the log."""
            start = logfile.stat().st_size if logfile else 0
            for _ in range(requests):
                check(httpx.post(url, content=body, headers=headers))
            if logfile is None:
                return []
            time.sleep(0.5)
            pids = asyncio.run(probe_pids())
            with open(logfile, errors="replace") as f:
                f.seek(start)
                return [
                    m.group(2).strip()
                    for line in f
                    if (m := LOGGED.search(line)) and int(m.group(1)) in pids
                ]

        def check_page(r: httpx.Response) -> None:
            run.check_page("postgraphile-probe", as_service_page(r.json(), 10))

        def check_typename(r: httpx.Response) -> None:
            assert r.json() == {"data": {"__typename": "Query"}}, r.text

        page = statements(page_body, check_page, good)
        typename = statements(graphql_body("{ __typename }", {}), check_typename, json_headers())
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        found: dict[str, Any] = {"forged_status": forged_status, "node": node.strip()}
        if logfile is None:
            return {**found, "page_statements": None, "typename_statements": None}
        first = [s.split()[0].lower() if s else "" for s in page[:4]]
        assert len(first) == 4 and first[0] == "begin" and first[3] == "commit", (
            f"with auth PostGraphile ran {page[:4]}"
        )
        assert "set_config" in page[1], f"with auth PostGraphile ran {page[:4]}"
        return {
            **found,
            "page_statements": len(page) / requests,
            "typename_statements": len(typename) / requests,
            "statements": page[:4],
            "typename_example": typename[:4],
        }
    finally:
        run.stop_server(server)


def compare(run: Run, roles: Roles, found: dict[str, Any]) -> None:
    """The service (cache off and on) and PostGraphile (without and with auth), all four
    up at once on CPU 0 (an idle one costs nothing), each workload measured on one and
    the next in turn for ROUNDS rounds; the report takes the medians (config PEERS)."""
    from bench.workloads.overhead import overhead_workloads
    from bench.workloads.reads import read_workloads

    servers = [
        run.start_server(f"{PEERS}-cold", workers=1, pinned=True, env={"CACHE_TTL_SECONDS": "0"}),
        run.start_server(f"{PEERS}-warm", workers=1, pinned=True, env={"CACHE_TTL_SECONDS": "30"}),
        launch(run, SIDE_OPEN, run.db_url.replace("postgresql://", "postgres://"), []),
        launch(
            run,
            SIDE_AUTH,
            roles.dsn(run, roles.authenticator),
            ["--jwt-secret", run.secret_key, "--default-role", roles.anon],
        ),
    ]
    cold, warm, plain, authed = servers
    try:
        service = {
            w.key: w
            for w in overhead_workloads(run) + read_workloads(run, "reads_cold")
            if w.side == "graphql"
        }
        service_warm = next(w for w in read_workloads(run, "reads_warm") if w.side == "graphql")
        open_typename, open_page = workloads(run, SIDE_OPEN, json_headers())
        auth_typename, auth_page = workloads(
            run, SIDE_AUTH, json_headers(roles.token(run, run.users["reader"]))
        )
        plan = [
            (cold, service["overhead"]),
            (plain, open_typename),
            (authed, auth_typename),
            (cold, service["reads_cold"]),
            (plain, open_page),
            (authed, auth_page),
            (warm, service_warm),
        ]
        for server, w in plan:
            if server in (plain, authed):
                found.setdefault("node_warmup", {})[f"{w.key}/{w.side}"] = jit_warmup(
                    run, server, w
                )
        counted = {id(w) for _, w in plan if w.count_xacts} | {
            id(service["reads_cold"]),
            id(service_warm),
        }
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for n in range(ROUNDS):
            log(f"{PEERS}: round {n + 1} of {ROUNDS}")
            for server, w in plan:
                # PostgreSQL's transactions are counted in the first round only (the
                # counters take 22 s of idle time to settle).
                w.count_xacts = n == 0 and id(w) in counted
                row = measure(run, server, w, config=PEERS)
                if row is not None:
                    run.results.remove(row)
                    rows.setdefault((w.key, w.side), []).append(row)
        statements = {
            "reads_cold": found.get("page_statements"),
            "overhead": found.get("typename_statements"),
        }
        for (key, side), measured in rows.items():
            row = median_row(measured)
            if side == SIDE_AUTH:
                row["db_statements_per_request"] = statements[key]
            run.results.append(row)
    finally:
        for server in servers:
            run.stop_server(server)


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for a workload's rounds: the medians of its figures, each round's
    requests/s and CPU µs/req kept, the transactions from the round that counted them."""
    out = dict(rows[0])
    for field in ("rps", "cpu_us_per_request", "p50_ms", "p99_ms", "db_cpu_us_per_request"):
        values = [r[field] for r in rows if r.get(field) is not None]
        out[field] = statistics.median(values) if values else None
    misses = [r["cache_misses"] for r in rows if r.get("cache_misses") is not None]
    out["cache_misses"] = max(misses) if misses else None  # the worst round's
    out["db_xacts_per_request"] = next(
        (r["db_xacts_per_request"] for r in rows if r.get("db_xacts_per_request") is not None),
        None,
    )
    out["rounds"] = [{"rps": r["rps"], "cpu_us_per_request": r["cpu_us_per_request"]} for r in rows]
    return out


def jit_warmup(run: Run, server: Server, w: Workload) -> list[float]:
    """Load in steps of WARMUP_STEP_SECONDS until PostGraphile's CPU per request stops
    falling, at most WARMUP_STEPS; the CPU µs/req of each step."""
    steps: list[float] = []
    for _ in range(WARMUP_STEPS):
        before = cpu_seconds(server.pids())
        result = run_load(
            w.spec,
            server.url,
            duration=WARMUP_STEP_SECONDS,
            connections=run.args.connections,
            cpus="1",
            workdir=run.workdir,
            use_wrk=run.args.wrk,
        )
        if not result.requests:
            break
        steps.append((cpu_seconds(server.pids()) - before) / result.requests * 1e6)
        # Done after two steps in a row that did not beat the best so far by 5%: one
        # step alone moves by ~10% on a shared machine.
        best = min(steps[:-2], default=None)
        if best is not None and min(steps[-2:]) > 0.95 * best:
            break
    log(
        f"{server.name} {w.key}: warmed up, CPU µs/req per {WARMUP_STEP_SECONDS:g} s: "
        + ", ".join(f"{c:.0f}" for c in steps)
    )
    return steps


def postgraphile_suite(run: Run) -> None:
    """PostGraphile without and with auth beside the service (`compare`), after a probe
    of what it runs with auth."""
    if run.args.smoke:
        # Three Node processes and an npm install are not cheap next to a smoke run.
        run.postgraphile = {"skipped": "not in smoke runs"}
        log("PostGraphile: not in smoke runs")
        return
    why = install()
    if why is not None:
        # Said in the log and the report; the run goes on without it.
        run.postgraphile = {"skipped": why}
        log(f"PostGraphile not measured: {why}")
        return
    roles = Roles()
    try:
        asyncio.run(roles.create(run))
        try:
            found = probe(run, roles)
        except Exception as exc:
            log(f"FAILED postgraphile probe: {exc}")
            run.failures.append(Failure("postgraphile probe", str(exc)[:500]))
            return
        run.postgraphile = found
        statements = found["page_statements"]
        log(
            "PostGraphile with auth runs per page: "
            + (
                f"{statements:.2f} statements ({' / '.join(s[:40] for s in found['statements'])})"
                f"; per {{ __typename }}: {found['typename_statements']:.2f}"
                if statements is not None
                else "statements not counted (PostgreSQL's log is not readable here)"
            )
        )
        try:
            compare(run, roles, found)
        except Exception as exc:  # a server that would not start: said, and the run goes on
            log(f"FAILED postgraphile comparison: {exc}")
            run.failures.append(Failure("postgraphile comparison", str(exc)[:500]))
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(roles.drop(run))
