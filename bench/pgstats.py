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
import collections
import contextlib
import threading
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


# -- what the backends wait on (a profile of the database side of a workload) -----------

WAIT_SAMPLE_SECONDS = 0.02


def _state_label(row: asyncpg.Record) -> str:
    """`Lock:advisory` / `Client:ClientRead (idle in transaction)` / `CPU`, then the
    first words of the statement (it names the step of the transaction)."""
    if row["wait_event_type"] is None:
        state = "CPU" if row["state"] == "active" else str(row["state"])
    else:
        state = f"{row['wait_event_type']}:{row['wait_event']}"
        if row["state"] != "active":
            state += f" ({row['state']})"
    statement = " ".join(str(row["query"] or "").split())[:60]
    return f"{state} | {statement}"


class WaitSampler:
    """Samples `pg_stat_activity` of the bench database every 20 ms on a thread of its
    own while a load runs, and tells how many backends were, on average, in each state
    (waiting on a lock, on the client, on the WAL, or running) at which statement: the
    database side's profile. Each sample costs one small query (about 1% of a core)."""

    def __init__(self, admin_dsn: str, db_name: str) -> None:
        self._dsn = admin_dsn
        self._db = db_name
        self._stop = threading.Event()
        self._tally: collections.Counter[str] = collections.Counter()
        self._samples = 0
        self._thread = threading.Thread(target=self._run, name="pg-waits", daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        # Without a profile the measurement itself goes on.
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            asyncio.run(self._sample())

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT wait_event_type, wait_event, state, query FROM pg_stat_activity "
                    "WHERE datname = $1 AND backend_type = 'client backend' AND state <> 'idle' "
                    "AND pid <> pg_backend_pid()",
                    self._db,
                )
                self._samples += 1
                self._tally.update(_state_label(r) for r in rows)
                await asyncio.sleep(WAIT_SAMPLE_SECONDS)
        finally:
            await conn.close()

    def busiest(self, top: int = 6) -> list[tuple[str, float]]:
        """The `top` states with the average number of backends in each."""
        if not self._samples:
            return []
        return [(label, n / self._samples) for label, n in self._tally.most_common(top)]
