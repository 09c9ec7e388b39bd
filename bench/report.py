"""docs/benchmarks.md and docs/benchmarks.png, from one run's numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The issue's figures from its own machine, one pinned uvicorn worker each (requests/s).
# bench/reference_app.py serves the same four things in every run: what this run
# measured over these tells how fast this machine is, and scales the absolute targets.
REFERENCE = "reference"
# Issue 19's comparison (bench/workloads/postgraphile.py): the service and PostGraphile
# in interleaved rounds, the medians.
PEERS = "peers"
ISSUE_FIGURES = {
    ("overhead", "bare"): 12_400,  # a bare Starlette JSON route
    ("overhead", "stock"): 2_300,  # stock Strawberry, `{ __typename }`, caches on
    ("reads_cold", "bare"): 1_860,  # a bare route: the page of 10 orders with asyncpg
    ("reads_cold", "stock"): 370,  # stock Strawberry: the same page, same statements
}
NOTES = HERE / "NOTES.md"
BEFORE = HERE / "before.json"

WORKLOADS = (
    ("overhead", "GraphQL overhead: `{ __typename }` vs a plain Starlette JSON route"),
    ("reads_cold", "Reads, cache off: `orders(limit: 10)` with lines and owner vs asyncpg route"),
    ("reads_warm", "Reads, cache warm: the same query vs the same asyncpg route"),
    ("writes", "Writes: `createOrder` (unique tokens) vs the same INSERTs with asyncpg"),
    ("webhooks", "Webhooks: signed SUCCESS deliveries vs the same statements with asyncpg"),
)
# Libraries worth an inclusive figure (the event loop, uvicorn and the middleware are on
# every stack and say nothing).
INCLUSIVE_SHOWN = (
    "graphql-core",
    "strawberry",
    "app: schema/",
    "app: resolvers/",
    "app: webhooks/",
    "SQLAlchemy",
    "asyncpg",
    "redis-py",
    "logging",
    "prometheus",
)
SHORT = {
    "overhead": "overhead",
    "reads_cold": "reads cold",
    "reads_warm": "reads warm",
    "writes": "writes",
    "webhooks": "webhooks",
}


def _pair(results: list[dict[str, Any]], config: str, key: str) -> tuple[dict | None, dict | None]:
    rows = [r for r in results if r["config"] == config and r["workload"] == key]
    graphql = next((r for r in rows if r["side"] == "graphql"), None)
    baseline = next((r for r in rows if r["side"] == "baseline"), None)
    return graphql, baseline


def ratio(results: list[dict[str, Any]], config: str, key: str) -> float | None:
    g, b = _pair(results, config, key)
    if g is None or b is None or not b["rps"]:
        return None
    return float(g["rps"] / b["rps"])


def _fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _configs(results: list[dict[str, Any]]) -> list[str]:
    """The service's configurations, in the order they were measured."""
    seen: list[str] = []
    for r in results:
        if r["config"] not in seen and r["config"] not in (REFERENCE, PEERS):
            seen.append(r["config"])
    return seen


def reference(results: list[dict[str, Any]], key: str, side: str) -> dict[str, Any] | None:
    """The reference server's row for a workload: side "bare" or "stock"."""
    return next(
        (
            r
            for r in results
            if r["config"] == REFERENCE and r["workload"] == key and r["side"] == side
        ),
        None,
    )


def machine_factor(results: list[dict[str, Any]], key: str) -> float | None:
    """How much faster this machine ran the issue's bare route for `key` ("overhead": the
    JSON route; "reads_cold": the page with asyncpg) than the issue's machine did."""
    row = reference(results, key, "bare")
    return row["rps"] / ISSUE_FIGURES[(key, "bare")] if row and row["rps"] else None


def targets(
    results: list[dict[str, Any]], fanout: list[dict[str, Any]]
) -> list[tuple[str, str, str, bool | None, str]]:
    """(target, measured, where, met, the absolute goal scaled to this machine and
    whether that is met) for every target of the issue."""
    configs = _configs(results)
    pinned = "1w-pinned"
    absolute = "2w" if "2w" in configs else pinned
    # The database workloads scale with the bare page route; the fan-out (Python and
    # socket writes, no database) with the bare JSON route.
    db_scale = machine_factor(results, "reads_cold")
    cpu_scale = machine_factor(results, "overhead")
    out: list[tuple[str, str, str, bool | None, str]] = []

    def scaled_mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def add_ratio(key: str, goal: float) -> None:
        r = ratio(results, pinned, key)
        out.append(
            (
                f"{SHORT[key]}: ratio >= {goal:.2f}",
                _fmt(r, 2),
                pinned,
                None if r is None else r >= goal,
                "",
            )
        )

    def add_rps(key: str, goal: float) -> None:
        g, _ = _pair(results, absolute, key)
        v = g["rps"] if g else None
        scaled = ""
        if db_scale is not None and v is not None:
            scaled = f">= {goal * db_scale:,.0f} req/s: {scaled_mark(v >= goal * db_scale)}"
        out.append(
            (
                f"{SHORT[key]}: >= {goal:,.0f} req/s",
                _fmt(v),
                absolute,
                None if v is None else v >= goal,
                scaled,
            )
        )

    add_ratio("overhead", 0.25)
    add_ratio("reads_cold", 0.30)
    add_rps("reads_cold", 800)
    g, _ = _pair(results, absolute, "reads_cold")
    p99 = g["p99_ms"] if g else None
    scaled_p99 = ""
    if db_scale is not None and p99 is not None:
        # A machine `scale` times as fast takes 1/scale as long for the same work.
        scaled_p99 = f"<= {60 / db_scale:,.0f} ms: {scaled_mark(p99 <= 60 / db_scale)}"
    out.append(
        (
            "reads cold: p99 <= 60 ms at 32 connections",
            _fmt(p99, 1, " ms"),
            absolute,
            None if p99 is None else p99 <= 60,
            scaled_p99,
        )
    )
    add_ratio("reads_warm", 1.0)
    add_rps("reads_warm", 3000)
    add_rps("writes", 600)
    add_ratio("writes", 0.25)
    add_rps("webhooks", 800)
    big = max(fanout, key=lambda f: f["level"]) if fanout else None
    if big is not None:
        level = f"{big['level']:,} subscribers"
        scaled_fanout = ""
        if cpu_scale is not None and big["p99_ms"] is not None:
            ok = big["p99_ms"] <= 500 / cpu_scale
            scaled_fanout = f"<= {500 / cpu_scale:,.0f} ms: {scaled_mark(ok)}"
        out.append(
            (
                f"fan-out: p99 <= 500 ms ({level})",
                _fmt(big["p99_ms"], 0, " ms"),
                "1 process",
                big["p99_ms"] is not None and big["p99_ms"] <= 500,
                scaled_fanout,
            )
        )
        out.append(
            (f"fan-out: 0 lost ({level})", str(big["lost"]), "1 process", big["lost"] == 0, "")
        )
        out.append(
            (
                f"fan-out: <= 30 KB per subscriber ({level})",
                _fmt(big["kb_per_subscriber"], 1, " KB"),
                "1 process",
                big["kb_per_subscriber"] <= 30,
                "",
            )
        )
    return out


def _reference_section(results: list[dict[str, Any]]) -> list[str]:
    """The issue's reference figures measured here, and the service beside stock
    Strawberry on the same machine in the same run."""
    if not any(r["config"] == REFERENCE for r in results):
        return []
    names = {
        ("overhead", "bare"): "bare Starlette JSON route",
        ("overhead", "stock"): "stock Strawberry, `{ __typename }` (parser and validation caches)",
        ("reads_cold", "bare"): "bare Starlette route: the page of 10 orders with asyncpg",
        ("reads_cold", "stock"): "stock Strawberry: the same page from the same statements",
    }
    out = [
        "## The issue's reference figures, measured in this run",
        "",
        "`bench/reference_app.py`: the bare routes and stock Strawberry (`strawberry.asgi."
        "GraphQL`) with nothing around them (no middleware, access log, metrics or limits), "
        "served by uvicorn's defaults on one worker pinned like the service's, the same "
        "load. Both page answers are checked byte for byte against the service's.",
        "",
        "| reference | issue's machine, req/s | this run, req/s | this run / issue's | "
        "stock / bare: issue's | this run | CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (key, side), label in names.items():
        row = reference(results, key, side)
        if row is None:
            continue
        theirs = ISSUE_FIGURES[(key, side)]
        stock_ratio = ours_ratio = ""
        if side == "stock":
            bare = reference(results, key, "bare")
            stock_ratio = f"{theirs / ISSUE_FIGURES[(key, 'bare')]:.2f}"
            ours_ratio = _fmt(row["rps"] / bare["rps"] if bare and bare["rps"] else None, 2)
        out.append(
            f"| {label} | {theirs:,} | {row['rps']:,.0f} | {row['rps'] / theirs:.2f} | "
            f"{stock_ratio} | {ours_ratio} | {row['cpu_us_per_request']:,.0f} |"
        )
    out += [
        "",
        "The service against stock Strawberry, both on one pinned worker of this run. The "
        "service carries what stock Strawberry does not: the request-id and body-limit "
        "middleware, an access-log line and a latency histogram per request, the caller "
        "looked up in the database (its role) on every authenticated request, error codes "
        "and the document limits.",
        "",
        "| workload | stock Strawberry, req/s | service, req/s | service / stock | "
        "stock CPU µs/req | service CPU µs/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, stock_key in (
        ("overhead", "overhead"),
        ("reads_cold", "reads_cold"),
        ("reads_warm", "reads_cold"),
    ):
        stock = reference(results, stock_key, "stock")
        service, _ = _pair(results, "1w-pinned", key)
        if stock is None or service is None or not stock["rps"]:
            continue
        out.append(
            f"| {SHORT[key]} | {stock['rps']:,.0f} | {service['rps']:,.0f} | "
            f"{service['rps'] / stock['rps']:.2f} | {stock['cpu_us_per_request']:,.0f} | "
            f"{service['cpu_us_per_request']:,.0f} |"
        )
    out += [
        "",
        "(Stock Strawberry has no read cache: the warm row sets the service's cached reads "
        "beside its uncached page.)",
        "",
    ]
    return out


# Issue 19's "today" column (its own run, PostGraphile without auth): kept as "before".
ISSUE19_BEFORE = {
    "cold": "0.54 (vs without auth)",
    "db_cpu": "1.48",
    "statements": "2.02 / 1.01",
    "warm": "1.69 (vs without auth)",
    "warm_tail": "1.6",
    "typename": "0.33",
}
PGL_OPEN, PGL_AUTH = "postgraphile", "postgraphile-auth"


def _rps_cpu(row: dict[str, Any] | None) -> str:
    if row is None:
        return "n/a"
    return f"{row['rps']:,.0f} ({row['cpu_us_per_request']:,.0f})"


def _over(a: dict[str, Any] | None, b: dict[str, Any] | None, field: str = "rps") -> float | None:
    if a is None or b is None or a.get(field) is None or not b.get(field):
        return None
    return float(a[field] / b[field])


def _postgraphile_section(results: list[dict[str, Any]], found: dict[str, Any]) -> list[str]:
    """PostGraphile without and with auth beside stock Strawberry and the service, and
    issue 19's targets (bench/workloads/postgraphile.py)."""
    if found.get("skipped"):
        return ["## PostGraphile (issue 19)", "", f"Not measured: {found['skipped']}.", ""]
    if not any(r["config"] == PEERS and r["side"] == PGL_AUTH for r in results):
        return []

    def peer(key: str, side: str) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in results
                if r["config"] == PEERS and r["workload"] == key and r["side"] == side
            ),
            None,
        )

    cold = peer("reads_cold", "graphql")
    warm = peer("reads_warm", "graphql")
    typename = peer("overhead", "graphql")
    page_open = peer("reads_cold", PGL_OPEN)
    page_auth = peer("reads_cold", PGL_AUTH)
    trivial_open = peer("overhead", PGL_OPEN)
    trivial_auth = peer("overhead", PGL_AUTH)
    rounds = len((cold or {}).get("rounds") or []) or 1
    warmup = "; ".join(
        f"{what} " + " → ".join(f"{c:,.0f}" for c in steps)
        for what, steps in (found.get("node_warmup") or {}).items()
    )
    statements = found.get("page_statements")
    shown = " / ".join(f"`{s[:60]}`" for s in found.get("statements") or [])
    out = [
        "## PostGraphile beside the service (issue 19)",
        "",
        "PostGraphile 4.14.1 (`bench/postgraphile/package-lock.json`, Node "
        f"{found.get('node', '?')}), `--disable-graphiql --disable-query-log "
        "--simple-collections omit --legacy-relations omit`, one process pinned to CPU 0 "
        "like the service's worker, on the run's database, the same load. The service "
        "(cache off, cache on) and PostGraphile (without, with auth) are up at once on "
        "CPU 0, each workload measured on one and the next in turn: medians of "
        f"{rounds} interleaved rounds. PostGraphile was first loaded in 5 s steps until its "
        "CPU per request stopped falling (V8 compiling its hot paths; CPU µs/req per step: "
        f"{warmup}). **Without "
        "auth** it connects as the run's database user. **With auth** it connects as an "
        "authenticator role (NOINHERIT) with `--jwt-secret` and `--default-role` (a role "
        "with no grants); the token's `role` claim names the role the request runs as "
        "(SELECT on orders, order_lines, users) and every claim becomes `jwt.claims.*`. "
        "The page is `allOrders(condition: {userId}, orderBy: [CREATED_AT_DESC, ID_DESC], "
        "first: 10)` with `totalCount`, `orderLinesByOrderId` and `userByUserId`, sent with "
        "the owner's token; its answer, mapped to the service's shape, is checked equal to "
        "the service's before each measurement. `{ __typename }` is sent without a token, "
        "as to the service.",
        "",
        "A probe instance (its login role alone has `log_statement = all`) showed what "
        "PostGraphile with auth runs: "
        + (
            f"{statements:.2f} statements per page ({shown}), "
            f"{found.get('typename_statements', 0):.2f} per `{{ __typename }}` without a "
            "token (the default role's transaction)"
            if statements is not None
            else "not counted (PostgreSQL's log could not be read)"
        )
        + "; a token signed with another secret was refused (HTTP "
        f"{found.get('forged_status', '?')}), and the page without a token was refused "
        "(permission denied for the default role).",
        "",
        "| workload | stock Strawberry req/s (CPU µs/req) | service | PostGraphile | "
        "PostGraphile with auth | service / PostGraphile with auth |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    stock_page = reference(results, "reads_cold", "stock")
    for label, stock, service, open_, auth in (
        ("page, cache off", stock_page, cold, page_open, page_auth),
        ("page, cache on", stock_page, warm, page_open, page_auth),
        (
            "`{ __typename }`",
            reference(results, "overhead", "stock"),
            typename,
            trivial_open,
            trivial_auth,
        ),
    ):
        out.append(
            f"| {label} | {_rps_cpu(stock)} | {_rps_cpu(service)} | {_rps_cpu(open_)} | "
            f"{_rps_cpu(auth)} | {_fmt(_over(service, auth), 2)} |"
        )
    out += [
        "",
        "PostgreSQL's side of each workload (`bench/pgstats.py`): its backends' CPU per "
        "request (/proc) and transactions per request (`pg_stat_database` xact_commit + "
        "xact_rollback of the bench database; pg_stat_statements is not preloaded on this "
        "server). The service's reads run in autocommit, so their transactions are their "
        "statements; statements of PostGraphile with auth come from the probe's log.",
        "",
        "| workload | PostgreSQL CPU µs/req | transactions/req | statements/req |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, row, stmts in (
        ("service, page, cache off", cold, "= transactions"),
        ("service, page, cache on", warm, "= transactions"),
        ("PostGraphile, page", page_open, "= transactions"),
        ("PostGraphile with auth, page", page_auth, _fmt(statements, 2)),
        ("service, `{ __typename }`", typename, "= transactions"),
        (
            "PostGraphile with auth, `{ __typename }`",
            trivial_auth,
            _fmt(found.get("typename_statements"), 2),
        ),
    ):
        if row is None:
            continue
        out.append(
            f"| {label} | {_fmt(row.get('db_cpu_us_per_request'))} | "
            f"{_fmt(row.get('db_xacts_per_request'), 2)} | {stmts} |"
        )

    def met(value: float | None, ok: bool) -> str:
        return "n/a" if value is None else ("yes" if ok else "**no**")

    cold_r = _over(cold, page_auth)
    warm_r = _over(warm, page_auth)
    db_r = _over(cold, page_auth, "db_cpu_us_per_request")
    db_open = _over(cold, page_open, "db_cpu_us_per_request")
    s_cold = cold.get("db_xacts_per_request") if cold else None
    s_warm = warm.get("db_xacts_per_request") if warm else None
    # Counted from a few seconds of counters (bench/pgstats.py): a few percent either way.
    stmts_ok = s_cold is not None and s_warm is not None and s_cold <= 1.05 and s_warm <= 0.05
    tail = warm["p99_ms"] / warm["p50_ms"] if warm and warm["p50_ms"] else None
    # What else shaped the tail: misses during the measurement (a miss burst shows as
    # many), and the same ratio for PostGraphile's page served beside it in the same run.
    context = ""
    if warm and warm.get("cache_misses") is not None:
        context += f"; {warm['cache_misses']} cache misses in it"
    peer_tails = [
        f"{name} {r['p99_ms'] / r['p50_ms']:.2f}"
        for name, r in (("PostGraphile", page_open), ("with auth", page_auth))
        if r and r.get("p50_ms")
    ]
    if peer_tails:
        context += f" (PostGraphile's page beside it: {', '.join(peer_tails)})"
    type_r = _over(typename, trivial_auth)
    type_open = _over(typename, trivial_open)
    out += [
        "",
        "### Issue 19's targets",
        "",
        "Ratios of requests/s, the service on one pinned worker against PostGraphile with "
        'auth (PostGraphile without auth in brackets); "before" is the issue\'s own run.',
        "",
        "| workload | before | this run | goal | met |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| cold page vs PostGraphile with auth | {ISSUE19_BEFORE['cold']} | {_fmt(cold_r, 2)} "
        f"({_fmt(_over(cold, page_open), 2)}) | ≥ 1.0 | {met(cold_r, (cold_r or 0) >= 1.0)} |",
        f"| PostgreSQL CPU per cold page vs PostGraphile | {ISSUE19_BEFORE['db_cpu']} | "
        f"{_fmt(db_r, 2)} ({_fmt(db_open, 2)}) | ≤ 1.0 | {met(db_r, (db_r or 9) <= 1.0)} |",
        f"| statements per cold / warm read | {ISSUE19_BEFORE['statements']} | "
        f"{_fmt(s_cold, 2)} / {_fmt(s_warm, 2)} | 1 / 0 | "
        f"{met(s_cold, stmts_ok)} |",
        f"| warm page vs PostGraphile with auth | {ISSUE19_BEFORE['warm']} | {_fmt(warm_r, 2)} "
        f"({_fmt(_over(warm, page_open), 2)}) | ≥ 2.5 | {met(warm_r, (warm_r or 0) >= 2.5)} |",
        f"| warm page p99 / p50 | {ISSUE19_BEFORE['warm_tail']} | {_fmt(tail, 2)}{context} "
        f"| ≤ 1.5 | {met(tail, (tail or 9) <= 1.5)} |",
        f"| `{{ __typename }}` vs PostGraphile with auth | {ISSUE19_BEFORE['typename']} "
        f"(vs without auth) | {_fmt(type_r, 2)} ({_fmt(type_open, 2)}) | ≥ 0.5 | "
        f"{met(type_r, (type_r or 0) >= 0.5)} |",
        "| every target of the benchmark issue | holds | see Targets | still holds | |",
        "",
    ]
    return out


def _results_table(results: list[dict[str, Any]], config: str) -> list[str]:
    split = any(r.get("worker_cpu_share") for r in results if r["config"] == config)
    lines = [
        "| workload | path | req/s | p50 ms | p99 ms | server CPU µs/req | service/baseline |"
        + (" CPU split over workers |" if split else ""),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" --- |" if split else ""),
    ]
    for key, _ in WORKLOADS:
        g, b = _pair(results, config, key)
        for side, row in (("baseline", b), ("graphql", g)):
            if row is None:
                continue
            r = ratio(results, config, key) if side == "graphql" else None
            path = "service" if side == "graphql" else "baseline"
            shares = " / ".join(f"{x:.0%}" for x in row.get("worker_cpu_share") or [])
            lines.append(
                f"| {SHORT[key]} | {path} | {row['rps']:,.0f} | {row['p50_ms']:.1f} | "
                f"{row['p99_ms']:.1f} | {row['cpu_us_per_request']:,.0f} | "
                f"{_fmt(r, 2) if r is not None else ''} |" + (f" {shares} |" if split else "")
            )
    return lines


def _waits_section(results: list[dict[str, Any]]) -> list[str]:
    """The database side of the writes: what their backends were doing (WaitSampler)."""
    rows = [r for r in results if r.get("db_waits")]
    if not rows:
        return []
    out = [
        "## The database side of the writes",
        "",
        "What the bench database's backends were doing during each write measurement "
        "(`pg_stat_activity` sampled every 20 ms, `bench/pgstats.py`): the average number "
        "of backends in each state, at which statement. `Lock:advisory` is the event log's "
        "lock (docs/events.md): every event-writing transaction holds it from its event's "
        "insert to its commit; `Client:ClientRead (idle in transaction)` is a backend waiting "
        "for the service's next statement; `IO:WALSync` the commit's flush.",
        "",
        "| run | workload | path | backends on average: state, statement |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        busiest = "<br>".join(
            f"{n:.2f} {label.replace('|', '·')}" for label, n in r["db_waits"][:4]
        )
        out.append(f"| {r['config']} | {r['workload']} | {r['side']} | {busiest} |")
    return [*out, ""]


def _profile_section(profiles: list[dict[str, Any]]) -> list[str]:
    if not profiles:
        return []
    out = [
        "## Where the CPU goes (py-spy, pinned worker, under the same load)",
        "",
        "Self time by library: the share of samples whose innermost Python frame is in that "
        "library (C code is charged to the Python frame that called it). Sampled in separate "
        "runs after the measurements, so the profiler does not slow the numbers above. py-spy "
        "stops the process for each sample, which makes a line that makes a system call "
        "look costlier than it is (bench/profile.py); what a change saves is measured with "
        "bench/ab.",
        "",
        "| workload | samples | self time by library | hottest functions (self) |",
        "| --- | ---: | --- | --- |",
    ]
    for p in profiles:
        libs = ", ".join(f"{k} {v:.0%}" for k, v in p["self_by_library"][:7])
        funcs = "<br>".join(f"{k} {v:.1%}" for k, v in p["top_functions"][:6])
        out.append(
            f"| {SHORT.get(p['workload'], p['workload'])} | {p['samples']} | {libs} | {funcs} |"
        )
    out += [
        "",
        "Inclusive time (a sample counts for every library on its stack):",
        "",
    ]
    for p in profiles:
        libs = ", ".join(
            f"{k} {v:.0%}" for k, v in p["inclusive_by_library"] if k in INCLUSIVE_SHOWN
        )
        out.append(f"- {SHORT.get(p['workload'], p['workload'])}: {libs}")
    out.append("")
    return out


def befores() -> list[dict[str, Any]]:
    """The earlier runs that reports set their figures beside (bench/before.json), oldest
    first."""
    if not BEFORE.exists():
        return []
    kept = json.loads(BEFORE.read_text())
    return kept if isinstance(kept, list) else [kept]


def _before_after(results: list[dict[str, Any]], fanout: list[dict[str, Any]]) -> list[str]:
    runs = befores()
    if not runs:
        return []
    labels = [b.get("label", f"before {i + 1}") for i, b in enumerate(runs)]
    out = ["## Before and after the fixes", ""]
    for label, b in zip(labels, runs, strict=True):
        out.append(
            f"- *{label}*: {b.get('description', 'an earlier run')} (git `{b.get('git')}`, "
            f"load average {b.get('load', '?')})."
        )
    out += [
        "- *now*: this run.",
        "",
        "All on one pinned worker. Runs on other machines compare by their ratios (each "
        "against a baseline measured beside it); CPU per request compares only between runs "
        "on the same machine.",
        "",
    ]
    head = " | ".join(labels)
    cols = len(labels) + 1
    out += [
        f"| workload | ratio: {head} | now | CPU µs/req: {head} | now |",
        "| --- |" + " ---: |" * (2 * cols),
    ]
    for key, _ in WORKLOADS:
        old = [b.get("workloads", {}).get(key) or {} for b in runs]
        g, _ = _pair(results, "1w-pinned", key)
        if not any(old) and g is None:
            continue
        ratios = [_fmt(o.get("ratio"), 2) for o in old]
        ratios.append(_fmt(ratio(results, "1w-pinned", key), 2))
        cpus = [_fmt(o.get("cpu_us")) for o in old]
        cpus.append(_fmt(g["cpu_us_per_request"] if g else None))
        out.append(f"| {SHORT[key]} | " + " | ".join(ratios + cpus) + " |")
    if any(b.get("fanout") for b in runs):
        now = {f["level"]: f for f in fanout}
        levels = sorted({f["level"] for b in runs for f in b.get("fanout", [])} | set(now))
        out += [
            "",
            f"| fan-out | p99 ms: {head} | now | CPU µs/delivery: {head} | now "
            f"| KB/subscriber: {head} | now |",
            "| ---: |" + " ---: |" * (3 * cols),
        ]
        for level in levels:
            rows: list[dict[str, Any]] = [
                next((f for f in b.get("fanout", []) if f["level"] == level), {}) for b in runs
            ]
            rows.append(now.get(level, {}))
            cells = [_fmt(r.get("p99_ms")) for r in rows]
            cells += [_fmt(r.get("cpu_us_per_delivery")) for r in rows]
            cells += [_fmt(r.get("kb_per_subscriber"), 1) for r in rows]
            out.append(f"| {level:,} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def render(
    *,
    machine: dict[str, Any],
    results: list[dict[str, Any]],
    fanout: list[dict[str, Any]],
    profiles: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    settings: dict[str, Any],
    chart: str | None,
) -> str:
    load_before = ", ".join(f"{x:.2f}" for x in machine["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in machine.get("load_after", ()))
    pk = machine["packages"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `bench/run{' --smoke' if settings['smoke'] else ''}` on "
        f"{machine['started']} from git `{machine['git']}`"
        f"{' (with uncommitted changes)' if machine['git_dirty'] else ''}, in "
        f"{machine['seconds']:.0f} s. Every number below comes from that one run; "
        "rerun `bench/run` to replace this page.",
        "",
    ]
    if settings["smoke"]:
        lines += ["**Smoke run**: durations too short for the numbers to mean anything.", ""]
    if failures:
        lines += ["## Failures", ""] + [f"- {f['what']}: {f['why']}" for f in failures] + [""]
    if settings.get("stuck_shutdowns"):
        lines += [
            "**Shutdown:** the server did not stop within 8 s of SIGTERM (it was killed) "
            f"after: {', '.join(settings['stuck_shutdowns'])}. See the notes below.",
            "",
        ]
    lines += [
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {machine['cpu']}, {machine['cores']} cores |",
        f"| kernel | {machine['kernel']} |",
        f"| Python | {machine['python']} |",
        f"| PostgreSQL | {machine['postgresql']} |",
        f"| Redis | {machine['redis']} |",
        f"| packages | strawberry-graphql {pk['strawberry-graphql']}, graphql-core "
        f"{pk['graphql-core']}, starlette {pk['starlette']}, uvicorn {pk['uvicorn']}, "
        f"SQLAlchemy {pk['sqlalchemy']}, asyncpg {pk['asyncpg']}, orjson {pk['orjson']} |",
        f"| load generator | {machine['wrk'] if settings['tool'] == 'wrk' else settings['tool']} |",
        f"| load average (1, 5, 15 min) | before the run: {load_before}; after: {load_after} |",
        "",
        "The machine is shared: other test suites were running during the run (see the load "
        "average), and PostgreSQL and Redis run on the same two cores. That is why every "
        "figure stands beside a baseline measured in the same server minutes apart, and why "
        "server CPU time per request (which drifts less than requests/s) is reported too.",
        "",
        "## How it was measured",
        "",
        "- The service is `create_app(settings)` served by uvicorn exactly as `order-service "
        "serve` does, with the baseline routes of `bench/baseline_app.py` mounted on the same "
        "app (same middleware, access log, process and event loop). PostgreSQL + Redis, "
        "`APP_ENV=production`, `LOG_LEVEL=INFO`, rate limits off.",
        f"- Each measurement: {settings['connections']} connections, "
        f"{settings['duration']:g} s after {settings['warmup']:g} s of warm-up, load from "
        f"{settings['tool']} in a separate process. **1w-pinned**: one worker pinned to CPU 0 "
        "(`taskset -c 0`), the load on CPU 1. **2w**: `--workers 2`, nothing pinned.",
        "- Server CPU µs/req: utime + stime of the server's processes (from /proc) over the "
        "measurement, divided by the requests answered. PostgreSQL's and Redis's CPU is not in it.",
        "- The issue's reference servers (`bench/reference_app.py`, below) are measured "
        "first, on the pinned worker's core, the same way.",
        "- Every measurement checks its answers: one request is checked in full first (the "
        "baseline's and the references' reads must return the JSON that GraphQL returns), any "
        "non-2xx answer fails the run, and for writes and webhooks the rows in the database "
        "must match the answers counted.",
        "",
    ]
    for config in _configs(results):
        lines += [f"## Results: {config}", "", *_results_table(results, config), ""]
    lines += _waits_section(results)
    if fanout:
        lines += [
            "## Fan-out: one server process (pinned to CPU 0), idle subscribers",
            "",
            "`graphql-transport-ws` connections as ADMIN, each subscribed to "
            "`orderStatusChanged(orderId: null) { orderId status version changedAt }`; then "
            f"{settings['fanout_events']} `updateOrderStatus` mutations at "
            f"{settings['fanout_rate']:g} per second. Latency: arrival at the client minus "
            "the event's `changedAt` (taken just before the commit), both from the same "
            "clock. Memory: the server's RSS with the subscribers connected, less its RSS "
            "before the first one, per subscriber.",
            "",
            "| subscribers | deliveries | lost | p50 ms | p95 ms | p99 ms | max ms | "
            "server RSS MB | KB per subscriber | server CPU µs/delivery | connect s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for f in fanout:
            lines.append(
                f"| {f['level']:,} | {f['delivered']:,} | {f['lost']} | {_fmt(f['p50_ms'], 0)} | "
                f"{_fmt(f['p95_ms'], 0)} | {_fmt(f['p99_ms'], 0)} | {_fmt(f['max_ms'], 0)} | "
                f"{f['rss_mb']:.0f} | {f['kb_per_subscriber']:.1f} | "
                f"{f['cpu_us_per_delivery']:.0f} | {f['connect_seconds']:.1f} |"
            )
        lines.append("")
    replay = settings.get("replay") or []
    if replay:
        lines += [
            "## Replay: a subscriber resuming after missed events (one process, pinned)",
            "",
            "While one ADMIN subscriber is live, the missed events are written to the log "
            "(spread over 100 orders) and one change goes through the service, so the "
            "process's feed reads them from the log as a running server would have heard "
            "them. Then a second ADMIN subscriber sends `orderEvents(after: <cursor before "
            "them>)` and reads until it has every one. Time: from the subscribe to the last "
            "event; CPU: the server's over that time; memory: its RSS growth at the peak "
            "(sampled every 1,000 events) over its RSS before.",
            "",
            "| missed events | received | seconds | events/s | first event ms | "
            "server CPU s | CPU µs/event | RSS MB | RSS growth MB |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in replay:
            lines.append(
                f"| {r['missed']:,} | {r['received']:,} | {r['seconds']:.2f} | "
                f"{r['events_per_second']:,.0f} | {r['first_event_ms']:.0f} | "
                f"{r['cpu_seconds']:.2f} | {r['cpu_us_per_event']:.0f} | {r['rss_mb']:.0f} | "
                f"{r['rss_peak_growth_mb']:.1f} |"
            )
        lines.append("")
    lines += _reference_section(results)
    lines += _postgraphile_section(results, settings.get("postgraphile") or {})
    rows = targets(results, fanout)
    if rows:
        db_scale = machine_factor(results, "reads_cold")
        cpu_scale = machine_factor(results, "overhead")
        scale_note = (
            f"This machine ran the issue's bare page route {db_scale:.2f} times and its bare "
            f"JSON route {cpu_scale:.2f} times as fast as the issue's machine did (the "
            "reference figures above); the last column holds the absolute goals scaled by "
            "the first factor (the fan-out's by the second), what the same code would have "
            "to reach here to meet them there."
            if db_scale is not None and cpu_scale is not None
            else ""
        )
        lines += [
            "## Targets",
            "",
            "Ratios from the pinned single worker; absolute figures from 2 workers (as the "
            f"issue asks; the 1-worker figures are in the tables above). {scale_note}",
            "",
            "| target | measured | on | met | scaled to this machine |",
            "| --- | ---: | --- | --- | --- |",
        ]
        for name, value, where, met, scaled in rows:
            mark = "n/a" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {name} | {value} | {where} | {mark} | {scaled} |")
        lines.append("")
    lines += _profile_section(profiles)
    if not settings["smoke"]:
        lines += _before_after(results, fanout)
        if NOTES.exists():
            lines += [NOTES.read_text().rstrip(), ""]
    if chart:
        lines += ["## Chart", "", f"![benchmarks]({chart})", ""]
    return "\n".join(lines)


def chart(
    path: Path,
    results: list[dict[str, Any]],
    fanout: list[dict[str, Any]],
    connections: int = 32,
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    configs = _configs(results)
    panels = len(configs) + (1 if fanout else 0)
    if panels == 0:
        return False
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    for ax, config in zip(axes[0], configs, strict=False):
        keys = [k for k, _ in WORKLOADS if any(_pair(results, config, k))]
        xs = range(len(keys))
        # Stock Strawberry beside the pinned worker's figures, where the run measured it.
        stock = {
            k: row
            for k in keys
            if config == "1w-pinned" and (row := reference(results, k, "stock")) is not None
        }
        sides = [("baseline", "#9aa5b1", "baseline"), ("graphql", "#2f6db5", "service")]
        if stock:
            sides.append(("stock", "#e08a2c", "stock Strawberry"))
        width = 0.8 / len(sides)
        for i, (side, color, label) in enumerate(sides):
            offset = (i - (len(sides) - 1) / 2) * width
            values = []
            for k in keys:
                if side == "stock":
                    values.append(stock[k]["rps"] if k in stock else 0)
                else:
                    row = _pair(results, config, k)[0 if side == "graphql" else 1]
                    values.append((row or {}).get("rps", 0))
            ax.bar([x + offset for x in xs], values, width=width, color=color, label=label)
        service_offset = (1 - (len(sides) - 1) / 2) * width
        for x, k in zip(xs, keys, strict=True):
            r = ratio(results, config, k)
            if r is not None:
                g = _pair(results, config, k)[0]
                assert g is not None
                ax.annotate(
                    f"{r:.2f}x",
                    (x + service_offset, g["rps"]),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax.set_xticks(list(xs), [SHORT[k] for k in keys], rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("requests/s (log)")
        ax.set_title(f"{config}: {connections} connections")
        ax.legend(fontsize=8)
    if fanout:
        ax = axes[0][-1]
        levels = [f["level"] for f in fanout]
        for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
            ax.plot(levels, [f[key] or 0 for f in fanout], style, label=key.replace("_ms", ""))
        ax.axhline(500, color="red", linestyle=":", linewidth=1, label="p99 target")
        ax.set_xlabel("idle subscribers")
        ax.set_ylabel("delivery latency ms")
        ax.set_title("fan-out, one process")
        ax2 = ax.twinx()
        kb = [f["kb_per_subscriber"] for f in fanout]
        ax2.plot(levels, kb, "k--", label="KB/subscriber")
        ax2.axhline(30, color="gray", linestyle=":", linewidth=1, label="30 KB target")
        ax2.set_ylim(0, max(35.0, max(kb) * 1.2))
        ax2.set_ylabel("server KB per subscriber")
        ax.legend(fontsize=8, loc="upper left")
        ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(
    out_dir: Path,
    *,
    machine: dict[str, Any],
    results: list[dict[str, Any]],
    fanout: list[dict[str, Any]],
    profiles: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    settings: dict[str, Any],
) -> list[Path]:
    png = out_dir / "benchmarks.png"
    has_chart = chart(png, results, fanout, settings.get("connections", 32))
    md = out_dir / "benchmarks.md"
    md.write_text(
        render(
            machine=machine,
            results=results,
            fanout=fanout,
            profiles=profiles,
            failures=failures,
            settings=settings,
            chart=png.name if has_chart else None,
        )
    )
    data = out_dir / "benchmarks.json"
    data.write_text(
        json.dumps(
            {
                "machine": machine,
                "settings": settings,
                "results": results,
                "fanout": fanout,
                "profiles": profiles,
                "failures": failures,
            },
            indent=1,
            default=str,
        )
    )
    return [md, png, data] if has_chart else [md, data]


def as_before(report: dict[str, Any], label: str, description: str) -> dict[str, Any]:
    """A run's benchmarks.json, summed up for bench/before.json (what later reports set
    their figures beside)."""
    results = report["results"]
    machine = report["machine"]
    workloads: dict[str, Any] = {}
    for key, _ in WORKLOADS:
        g, b = _pair(results, "1w-pinned", key)
        if g is None or b is None:
            continue
        r = ratio(results, "1w-pinned", key)
        workloads[key] = {
            "ratio": round(r, 3) if r is not None else None,
            "cpu_us": round(g["cpu_us_per_request"]),
            "rps": round(g["rps"], 1),
            "baseline_rps": round(b["rps"], 1),
            "baseline_cpu_us": round(b["cpu_us_per_request"]),
        }
    keep = ("level", "p50_ms", "p99_ms", "lost", "kb_per_subscriber", "cpu_us_per_delivery")
    return {
        "label": label,
        "description": description,
        "git": machine.get("git"),
        "load": ", ".join(f"{x:.2f}" for x in machine.get("load_before", ())),
        "workloads": workloads,
        "fanout": [{k: f.get(k) for k in keep} for f in report.get("fanout", [])],
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Work with a run's benchmarks.json without running the harness again.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    keep = commands.add_parser(
        "before", help="add its figures to bench/before.json (replacing one of the same label)"
    )
    keep.add_argument("benchmarks_json", type=Path)
    keep.add_argument("label", help="a short name for the run, e.g. '2026-12-04 start'")
    keep.add_argument("description", help="what the run measured, for the report")
    render_cmd = commands.add_parser(
        "render", help="write its report and chart again (after editing NOTES.md, say)"
    )
    render_cmd.add_argument("benchmarks_json", type=Path)
    args = parser.parse_args(argv)
    data = json.loads(args.benchmarks_json.read_text())
    if args.command == "before":
        kept = [b for b in befores() if b.get("label") != args.label]
        kept.append(as_before(data, args.label, args.description))
        BEFORE.write_text(json.dumps(kept, indent=1) + "\n")
        print(f"wrote {BEFORE}: {len(kept)} runs")
        return
    paths = write(
        args.benchmarks_json.parent,
        machine=data["machine"],
        results=data["results"],
        fanout=data["fanout"],
        profiles=data["profiles"],
        failures=data["failures"],
        settings=data["settings"],
    )
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
