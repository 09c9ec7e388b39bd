"""One benchmark run: its options, database, servers, results and failures."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.processes import REPO, Server, free_port, log, raise_nofile, stop_process_group


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
    # PostGraphile beside the service (bench/workloads/postgraphile.py): what its probe
    # found, or why it was skipped.
    postgraphile: dict[str, Any] = field(default_factory=dict)

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
                preexec_fn=raise_nofile,
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
