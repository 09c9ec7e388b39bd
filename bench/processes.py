"""Processes of a benchmark run: the servers and load generators it starts, their CPU time
and memory, and stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import profile as profiling

REPO = Path(__file__).resolve().parent.parent


CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
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
