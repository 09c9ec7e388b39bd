"""The benchmark harness behind `bench/run`: one run, one report.

Creates a throwaway PostgreSQL database and a private Redis key prefix, loads data,
starts the service (`bench.baseline_app`: the real app plus baseline routes) with rate
limits off, drives load from separate processes, and writes the report and its chart.
Every number in the report comes from this run. How to run it: README.md, "Benchmarks".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import profile as profiling
from bench import report
from bench.database import clear_redis, create_database, drop_database, payment_batch, seed
from bench.load import TOKEN_PLACEHOLDER, LoadSpec, have_wrk, run_load
from bench.measure import CREATE_MUTATION, ITEMS, ORDERS_QUERY, graphql_body, json_headers, measure
from bench.processes import REPO, Server, log, stop_process_group
from bench.runs import Run
from bench.workloads.fanout import run_fanout
from bench.workloads.overhead import overhead_workloads
from bench.workloads.reads import read_workloads
from bench.workloads.reference import reference_suite
from bench.workloads.replay import run_replay
from bench.workloads.scale import run_scale
from bench.workloads.scale import write_report as write_scale_report
from bench.workloads.webhooks import webhook_workloads
from bench.workloads.writes import write_workloads


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
    scale = p.add_argument_group("orders at scale (issue 20; bench/workloads/scale.py)")
    scale.add_argument(
        "--scale", type=int, help="only the scale workload, on N generated orders (e.g. 1000000)"
    )
    scale.add_argument("--sqlite", action="store_true", help="--scale on SQLite")
    scale.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the N-order database (bench_scale_N) and reuse it when the same N is asked",
    )
    scale.add_argument("--scale-requests", type=int, default=50, help="requests per shape")
    scale.add_argument(
        "--scale-seconds",
        type=float,
        default=30.0,
        help="at most this long per shape once 5 requests are timed (default %(default)s)",
    )
    scale.add_argument(
        "--scale-base",
        type=int,
        default=10_000,
        help="orders of the small database the shapes are compared with (default %(default)s)",
    )
    scale.add_argument(
        "--scale-load-base",
        type=int,
        default=5_000,
        help="orders of the database the "
        "32-connection throughput is compared with (default %(default)s)",
    )
    scale.add_argument(
        "--scale-migrate-from",
        metavar="REVISION",
        help="measure the migrations after REVISION together (default: the newest alone)",
    )
    scale.add_argument(
        "--no-scale-migrate",
        dest="scale_migrate",
        action="store_false",
        help="skip the migration-under-writes measurement",
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
    if args.sqlite and not args.scale:
        p.error("--sqlite needs --scale N")
    if args.out is None:
        if smoke:
            args.out = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        else:
            args.out = REPO / "docs" / "scale" if args.scale else REPO / "docs"
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


def scale_main(run: Run, started: float) -> int:
    """`--scale N`: the scale workload alone (bench/workloads/scale.py)."""
    with cleaned_up(run):
        log(f"scale run {run.run_id}; load average before: {os.getloadavg()}")
        result = run_scale(run)
        for path in write_scale_report(run.args.out, result):
            log(f"wrote {path}")
    log(f"done in {time.monotonic() - started:.0f} s")
    for failure in run.failures:
        log(f"FAILED: {failure.what}: {failure.why}")
    return 1 if run.failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    run = Run.start(args)
    if args.scale:
        return scale_main(run, started)
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
                "postgraphile": run.postgraphile,
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
