"""What a workload is, and how one is measured: load from another process, the server's
CPU time per request, answers checked."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from bench import pgstats
from bench.load import LoadResult, LoadSpec, run_load
from bench.processes import Server, cpu_seconds, log
from bench.runs import Failure, Run

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


def graphql_body(query: str, variables: dict[str, Any]) -> str:
    return orjson.dumps({"query": query, "variables": variables}).decode()


def json_headers(token: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = token
    return headers


def check_graphql(response: httpx.Response) -> dict[str, Any]:
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
    # Count PostgreSQL's transactions per request (bench/pgstats.py) on a pinned server:
    # costs about 22 s of idle time to let the counters settle, so only where the report
    # asks for them.
    count_xacts: bool = False


# Workloads whose database side is profiled (bench/pgstats.py, WaitSampler): the writes,
# which serialise on the event log's lock (docs/events.md).
WAIT_PROFILED = frozenset({"writes", "webhooks"})


def _cache_misses(url: str) -> int | None:
    """The service's `cache_requests_total{result="miss"}` from /metrics (None for a
    server without it, such as the baseline's or a reference app)."""
    try:
        page = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in page.splitlines():
        if line.startswith('cache_requests_total{result="miss"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def measure(run: Run, server: Server, w: Workload, *, config: str) -> dict[str, Any] | None:
    args = run.args
    what = f"{config} {w.key}/{w.side}"

    def load(spec: LoadSpec, duration: float) -> LoadResult:
        return run_load(
            spec,
            server.url,
            duration=duration,
            connections=args.connections,
            cpus="1" if server.pinned else None,
            workdir=run.workdir,
            use_wrk=args.wrk,
        )

    try:
        w.sample(server.url)
        count_xacts = w.count_xacts and server.pinned and not args.smoke
        xacts_before = pgstats.settled(run.admin_dsn, run.db_name) if count_xacts else None
        warmed = 0
        if w.warmup and args.warmup > 0:
            warmed = load(_warm_spec(w.spec), args.warmup).requests
        pids = server.pids()
        workers = server.worker_pids()
        cpu_before = cpu_seconds(pids)
        per_worker_before = [cpu_seconds([p]) for p in workers]
        db_before = pgstats.snapshot(run.admin_dsn, run.db_name)
        waits = (
            pgstats.WaitSampler(run.admin_dsn, run.db_name)
            if w.key in WAIT_PROFILED and run.db_name and not args.smoke
            else contextlib.nullcontext()
        )
        misses_before = _cache_misses(server.url) if w.key == "reads_warm" else None
        with waits:
            result = load(w.spec, args.duration)
        cpu = cpu_seconds(pids) - cpu_before
        misses_after = _cache_misses(server.url) if misses_before is not None else None
        per_worker = [cpu_seconds([p]) - b for p, b in zip(workers, per_worker_before, strict=True)]
        db_after = pgstats.snapshot(run.admin_dsn, run.db_name)
        db = {
            "db_cpu_us_per_request": pgstats.cpu_us_per_request(
                db_before, db_after, result.requests
            ),
            "db_xacts_per_request": pgstats.xacts_per_request(
                xacts_before,
                pgstats.settled(run.admin_dsn, run.db_name) if count_xacts else None,
                warmed + result.requests,
            ),
        }
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
        # PostgreSQL's side (bench/pgstats.py): transactions and backend CPU per request.
        **db,
        # Cached reads: how many missed the cache during the measurement (a burst of
        # misses at an entry's expiry shows here).
        "cache_misses": None
        if misses_before is None or misses_after is None
        else misses_after - misses_before,
        # What the database's backends were doing meanwhile (writes and webhooks).
        "db_waits": waits.busiest() if isinstance(waits, pgstats.WaitSampler) else [],
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
