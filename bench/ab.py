"""Two revisions of the service side by side: CPU per request, measured interleaved.

    bench/ab BASE [HEAD]       e.g. `bench/ab HEAD~2` (HEAD: the working tree)

What a change saves is often 5-15% of a request, while this shared machine's speed drifts
by as much from one minute to the next: two full runs of bench/run, minutes apart, cannot
tell the change from the drift. Here both revisions serve at once, each on one worker
pinned to CPU 0 (the load on CPU 1), on one database, and each workload is measured
alternately on one and the other, round after round (the order swapped every round), so
that the drift falls on both alike. The figure is the server's CPU time per request, the
median of the rounds; every round is printed too, so the spread shows.

BASE is checked out in a temporary git worktree (removed afterwards); it must have
bench/serve.py. Both revisions must answer the read workloads' page identically (the
harness checks it), so a change of the answers themselves is not for this tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import harness
from bench.load import have_wrk
from bench.measure import Workload, measure
from bench.processes import REPO, Server, log
from bench.runs import Run
from bench.workloads.overhead import overhead_workloads
from bench.workloads.reads import read_workloads
from bench.workloads.webhooks import webhook_workloads
from bench.workloads.writes import write_workloads

WORKLOADS = ("overhead", "reads_cold", "reads_warm", "writes", "webhooks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/ab", description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="a git revision: what the working tree is compared with")
    p.add_argument("head", nargs="?", help="another revision instead of the working tree")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {','.join(WORKLOADS)}"
    )
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    for side in ("a", "b"):
        p.add_argument(
            f"--env-{side}",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"an environment variable for {side.upper()}'s server only (repeatable): "
            "one revision twice, with a setting on one side (`bench/ab HEAD --env-b "
            "OTEL_TRACES_SAMPLER_ARG=0.1 ...`)",
        )
    harness.add_service_urls(p)
    args = p.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    for side in ("a", "b"):
        pairs = getattr(args, f"env_{side}")
        if any("=" not in pair for pair in pairs):
            p.error(f"--env-{side} takes NAME=VALUE")
        setattr(args, f"env_{side}", dict(pair.split("=", 1) for pair in pairs))
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if not have_wrk():
        p.error("wrk is not installed (apt-get install wrk)")
    return args


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """`revision` in a temporary worktree."""
    where = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    git = ["git", "-C", str(REPO)]
    subprocess.run(
        [*git, "worktree", "add", "--detach", str(where), revision],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(where)], capture_output=True)


def describe(revision: str | None) -> str:
    if revision is None:
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
        ).stdout.strip()
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"working tree ({head}{', with changes' if dirty else ''})"
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{revision} ({out.stdout.strip()})"


def with_env(env: dict[str, str]) -> str:
    return " with " + " ".join(f"{k}={v}" for k, v in env.items()) if env else ""


def workload_for(run: Run, key: str, tag: str) -> Workload:
    """The service's side of one of bench/run's workloads; `tag` keeps the rows each
    measurement writes apart from the others'."""
    if key == "overhead":
        return overhead_workloads(run)[1]
    if key in ("reads_cold", "reads_warm"):
        return read_workloads(run, key)[1]
    if key == "writes":
        return write_workloads(run, tag)[1]
    return webhook_workloads(run, tag, {"baseline": 0.0, "graphql": 3000.0})[1]


def measure_pair(
    run: Run, key: str, servers: dict[str, Server], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
    labels = list(servers)
    for i in range(rounds):
        order = labels if i % 2 == 0 else labels[::-1]
        for label in order:
            tag = f"ab{i}-{label}-{time.monotonic_ns()}"
            row = measure(run, servers[label], workload_for(run, key, tag), config=tag)
            if row is None:
                raise RuntimeError(f"{key} on {label}: {run.failures[-1].why}")
            rows[label].append(row)
    return rows


def table(
    results: dict[str, dict[str, list[dict[str, Any]]]], a: str, b: str, rounds: int
) -> list[str]:
    def med(rows: list[dict[str, Any]], field: str) -> float:
        return float(statistics.median(r[field] for r in rows))

    out = [
        "| workload | A: CPU µs/req | B: CPU µs/req | B / A | A: req/s | B: req/s | "
        "A, each round | B, each round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for key, rows in results.items():
        ca, cb = med(rows[a], "cpu_us_per_request"), med(rows[b], "cpu_us_per_request")
        each = [" ".join(f"{r['cpu_us_per_request']:.0f}" for r in rows[side]) for side in (a, b)]
        out.append(
            f"| {key} | {ca:,.0f} | {cb:,.0f} | {cb / ca:.2f} | {med(rows[a], 'rps'):,.0f} | "
            f"{med(rows[b], 'rps'):,.0f} | {each[0]} | {each[1]} |"
        )
    out += ["", f"Median of {rounds} interleaved rounds; CPU µs/req: the server's own."]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench_args = harness.parse_args(
        [
            "--no-profile",
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--connections",
            str(args.connections),
            "--database-url",
            args.database_url,
            "--redis-url",
            args.redis_url,
        ]
    )
    run = Run.start(bench_args, tag="ab")
    a_name = describe(args.base) + with_env(args.env_a)
    b_name = describe(args.head) + with_env(args.env_b)
    log(f"A = {a_name}; B = {b_name}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with contextlib.ExitStack() as stack:
        tree_a = stack.enter_context(checkout(args.base))
        tree_b = stack.enter_context(checkout(args.head)) if args.head else REPO
        stack.enter_context(harness.cleaned_up(run))
        asyncio.run(harness.create_database(run))
        asyncio.run(harness.seed(run, reader_orders=200))
        for cache_ttl, keys in (
            ("0", [k for k in args.workloads if k != "reads_warm"]),
            ("30", [k for k in args.workloads if k == "reads_warm"]),
        ):
            if not keys:
                continue
            servers: dict[str, Server] = {}
            for label, tree, side_env in (("A", tree_a, args.env_a), ("B", tree_b, args.env_b)):
                servers[label] = run.launch_server(
                    f"{label}-ttl{cache_ttl}",
                    workers=1,
                    pinned=True,
                    env={"CACHE_TTL_SECONDS": cache_ttl, **side_env},
                    tree=tree,
                )
            for server in servers.values():
                run.wait_ready(server)
            try:
                for key in keys:
                    results[key] = measure_pair(run, key, servers, args.rounds)
            finally:
                for server in servers.values():
                    run.stop_server(server)
    lines = [f"A = {a_name}, B = {b_name}", "", *table(results, "A", "B", args.rounds)]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
