"""A private `redis-server` on a free loopback port, for tests that stop and restart Redis.

    with RedisServer() as redis:          # started on a free port
        env = {"REDIS_URL": redis.url}
        redis.stop()                      # an outage: connections are refused
        redis.start()                     # back, same port, empty (no persistence)
        redis.pause(); redis.resume()     # a hung Redis: connections open, no answers

`RedisServer(port)` picks the port; the default is a free one. `RedisServer(args=[...])`
adds options to redis-server's command line (`["--rename-command", "INFO", ""]`, say). `url` names database 0;
`url_for(db)` another one. `stop()` and `start()` may be called any number of times.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.live import free_port

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class RedisServer:
    def __init__(self, port: int | None = None, *, args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self._args = list(args or [])
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.running:
            return self
        log = open(self._dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self._dir),
                    "--daemonize", "no",
                    *self._args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        self._wait(up=True, timeout=timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts nothing and answers nothing."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def log(self) -> str:
        path = self._dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait(self, *, up: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.log()}")
            if self._answers_ping() == up:
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{self.log()}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
