"""What PostgreSQL spent on a workload: its backends' CPU time and the transactions
counted for the bench database.

The CPU figure is utime + stime (from /proc) of the backends connected to the bench
database, over the measurement: PostgreSQL has to run on this machine for it (else it is
None). Transactions are `xact_commit + xact_rollback` of `pg_stat_database`. The
service's reads run in autocommit, one statement a transaction, so for them (and for
PostGraphile without auth) transactions are statements; PostGraphile with auth wraps
its statements in one transaction (bench/workloads/postgraphile.py counts those from the
statement log).

A busy backend does not publish its counters: it tries at most once a second and gives up
when another backend holds the database's entry, which under load is most of the time
(a 5 s load of 3,748 requests showed no transaction at all until the backends had been
idle for 10 s). So the transactions are counted between two moments when every backend
has been idle for longer than that (`settled`), over the warm-up and the measurement
together; the CPU over the measurement alone.

pg_stat_statements would count statements directly, but it needs
`shared_preload_libraries` (a server restart), which the bench does not do to a shared
server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from bench.processes import cpu_seconds


@dataclass
class DbSnapshot:
    xacts: int
    backend_cpu: dict[int, float]  # backend pid -> CPU seconds so far (empty if not local)


async def _snapshot(admin_dsn: str, db_name: str) -> DbSnapshot:
    conn = await asyncpg.connect(admin_dsn)
    try:
        xacts = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            db_name,
        )
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = "
            "'client backend'",
            db_name,
        )
    finally:
        await conn.close()
    cpu = {}
    for row in pids:
        pid = int(row["pid"])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                local = f.read().startswith(b"postgres")
        except OSError:
            local = False
        if local:
            cpu[pid] = cpu_seconds([pid])
    return DbSnapshot(int(xacts or 0), cpu)


def snapshot(admin_dsn: str, db_name: str) -> DbSnapshot | None:
    """The bench database's counters now; None without a database (or if they cannot be
    read: the measurement goes on without them)."""
    if not db_name:
        return None
    try:
        return asyncio.run(_snapshot(admin_dsn, db_name))
    except (OSError, asyncpg.PostgresError):
        return None


# PostgreSQL 15 (and later) publishes an idle backend's counters after 10 s.
IDLE_FLUSH_SECONDS = 10.0


def settled(admin_dsn: str, db_name: str) -> DbSnapshot | None:
    """The counters once the backends of the database have been idle long enough to have
    published them (call it when no load runs: about 11 s)."""
    time.sleep(IDLE_FLUSH_SECONDS + 0.5)
    last = snapshot(admin_dsn, db_name)
    for _ in range(5):
        time.sleep(1.0)
        now = snapshot(admin_dsn, db_name)
        if last is None or now is None or now.xacts == last.xacts:
            return now
        last = now
    return last


def xacts_per_request(
    before: DbSnapshot | None, after: DbSnapshot | None, requests: int
) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return (after.xacts - before.xacts) / requests


def cpu_us_per_request(
    before: DbSnapshot | None, after: DbSnapshot | None, requests: int
) -> float | None:
    """The database backends' CPU per request (None when not measured)."""
    if before is None or after is None or requests <= 0 or not after.backend_cpu:
        return None
    # A backend that connected during the measurement started from nothing.
    spent = sum(t - before.backend_cpu.get(pid, 0.0) for pid, t in after.backend_cpu.items())
    return max(spent, 0.0) / requests * 1e6
