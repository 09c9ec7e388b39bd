"""Run the production nginx configuration in front of local API processes.

deploy/nginx.conf.template is the one source of the proxy configuration. This
module renders it (for compose: deploy/nginx.conf; for a test: loopback
upstreams and a private prefix) and runs nginx as an ordinary child process:
no daemon, no root, every pid/log/temp path inside a temporary prefix.

    with run_nginx(["127.0.0.1:8001", "127.0.0.1:8002"], listen_port=8080) as proxy:
        httpx.get(f"{proxy.url}/health")

The nginx binary is taken from $NGINX_BIN, then PATH, then /usr/sbin/nginx, then
the copy scripts/check-deploy (or ensure_nginx()) unpacks into .cache/deploy-tools/.

Command line (stdlib only, so scripts/check-deploy can use it without the app):
    python3 tests/deploy/nginx_harness.py render-compose > deploy/nginx.conf
    python3 tests/deploy/nginx_harness.py render --upstream 127.0.0.1:8001 \\
        --upstream 127.0.0.1:8002 --listen-port 8080 --prefix /some/dir
    python3 tests/deploy/nginx_harness.py run --upstream 127.0.0.1:8001 --listen-port 8080
    python3 tests/deploy/nginx_harness.py ensure   # find nginx, or unpack Debian's package
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "deploy" / "nginx.conf.template"
COMPOSE_CONFIG_PATH = REPO_ROOT / "deploy" / "nginx.conf"
CACHED_NGINX = REPO_ROOT / ".cache" / "deploy-tools" / "nginx" / "usr" / "sbin" / "nginx"

# What compose.yml runs: the api service's replicas behind Docker's DNS name,
# logs to the container's stdout/stderr, writable paths on tmpfs mounts.
COMPOSE_UPSTREAMS = ("api:8000",)
COMPOSE_LISTEN = "8080"
COMPOSE_PATHS = {
    "PID_FILE": "/tmp/nginx.pid",  # noqa: S108 - a path inside the nginx container
    "ERROR_LOG": "stderr",
    "ACCESS_LOG": "/dev/stdout",
    "TEMP_DIR": "/var/cache/nginx",
}

SERVER_OPTIONS = "max_fails=3 fail_timeout=10s"
HEALTH_PATH = "/nginx-health"

_UPSTREAM_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")
_LISTEN_RE = re.compile(r"^((\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?[0-9]{1,5}$")
_PLACEHOLDER_RE = re.compile(r"@@([A-Z_]+)@@")
_GENERATED_HEADER = """\
# GENERATED from deploy/nginx.conf.template for compose.yml: do not edit.
# Edit the template, then run:
#   python3 tests/deploy/nginx_harness.py render-compose > deploy/nginx.conf
"""


def render_config(
    upstreams: Sequence[str],
    listen: str | int,
    *,
    pid_file: str,
    error_log: str,
    access_log: str,
    temp_dir: str,
    template: str | None = None,
) -> str:
    """Fill the template's placeholders; raise ValueError on any unsafe value."""
    if not upstreams:
        raise ValueError("at least one upstream is needed")
    for upstream in upstreams:
        if not _UPSTREAM_RE.match(upstream):
            raise ValueError(f"upstream {upstream!r} is not HOST:PORT")
    listen = str(listen)
    if not _LISTEN_RE.match(listen):
        raise ValueError(f"listen {listen!r} is not PORT or ADDRESS:PORT")
    paths = {
        "PID_FILE": pid_file,
        "ERROR_LOG": error_log,
        "ACCESS_LOG": access_log,
        "TEMP_DIR": temp_dir,
    }
    for name, value in paths.items():
        if not value or re.search(r"[\s;{}'\"$#]", value):
            raise ValueError(f"{name} {value!r} cannot go into nginx.conf unquoted")

    values = {
        "UPSTREAM_SERVERS": "\n".join(
            f"        server {upstream} {SERVER_OPTIONS};" for upstream in upstreams
        ),
        "LISTEN": listen,
        **paths,
    }
    text = TEMPLATE_PATH.read_text() if template is None else template
    missing = set(values) - set(_PLACEHOLDER_RE.findall(text))
    if missing:
        raise ValueError(f"template has no placeholder for {sorted(missing)}")
    rendered = _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)
    unknown = _PLACEHOLDER_RE.findall(rendered)
    if unknown:
        raise ValueError(f"template placeholders without a value: {sorted(set(unknown))}")
    return rendered


def render_compose_config(template: str | None = None) -> str:
    """deploy/nginx.conf as it must be committed: the template for compose."""
    text = TEMPLATE_PATH.read_text() if template is None else template
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)  # the template's own header talks about placeholders
    body = render_config(
        COMPOSE_UPSTREAMS,
        COMPOSE_LISTEN,
        pid_file=COMPOSE_PATHS["PID_FILE"],
        error_log=COMPOSE_PATHS["ERROR_LOG"],
        access_log=COMPOSE_PATHS["ACCESS_LOG"],
        temp_dir=COMPOSE_PATHS["TEMP_DIR"],
        template="".join(lines),
    )
    return _GENERATED_HEADER + "\n" + body


def render_local_config(upstreams: Sequence[str], listen: str | int, prefix: Path) -> str:
    """The template for a private prefix: every file nginx writes is under it."""
    return render_config(
        upstreams,
        listen,
        pid_file=str(prefix / "nginx.pid"),
        error_log=str(prefix / "logs" / "error.log"),
        access_log=str(prefix / "logs" / "access.log"),
        temp_dir=str(prefix / "tmp"),
    )


def find_nginx() -> str:
    candidates = [os.environ.get("NGINX_BIN"), shutil.which("nginx"), "/usr/sbin/nginx"]
    candidates.append(str(CACHED_NGINX))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "no nginx binary: set NGINX_BIN, install Debian's nginx, "
        "or run scripts/check-deploy once (it unpacks one into .cache/deploy-tools)"
    )


def _runs(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "-v"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ensure_nginx() -> str:
    """find_nginx(), or else Debian's nginx package unpacked into the cache, as
    scripts/check-deploy does: `apt-get download` (after `apt-get update` when root and
    the lists are missing) and `dpkg-deb -x`; nothing installed system-wide, no service.
    Raises FileNotFoundError saying why when neither works."""
    try:
        return find_nginx()
    except FileNotFoundError as exc:
        not_found = str(exc)
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise FileNotFoundError(f"{not_found}; no apt-get/dpkg-deb to unpack Debian's package")
    target = CACHED_NGINX.parents[2]  # .cache/deploy-tools/nginx, the unpacked package
    target.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    updated = False
    # Unpacked next to the target and moved into place whole, so that a concurrent
    # reader (scripts/check-deploy, another test run) never sees half a package.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".nginx-unpack-") as tmp:
        for package in ("nginx", "nginx-core", "nginx-light"):
            download = ["apt-get", "download", "-q", package]
            result = subprocess.run(download, cwd=tmp, capture_output=True, text=True, timeout=300)
            if result.returncode != 0 and os.geteuid() == 0 and not updated:
                updated = True
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
                result = subprocess.run(
                    download, cwd=tmp, capture_output=True, text=True, timeout=300
                )
            debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
            if result.returncode != 0 or not debs:
                problems.append(f"apt-get download {package}: {result.stderr.strip()[-200:]}")
                continue
            unpacked = Path(tmp) / f"unpacked-{package}"
            extract = subprocess.run(
                ["dpkg-deb", "-x", str(debs[-1]), str(unpacked)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            binary = unpacked / CACHED_NGINX.relative_to(target)
            if extract.returncode != 0 or not _runs(binary):
                problems.append(f"{debs[-1].name}: no working usr/sbin/nginx in it")
                continue
            shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(unpacked, target)
            except OSError:
                if not _runs(CACHED_NGINX):  # else another process just put one there
                    raise
            return str(CACHED_NGINX)
    raise FileNotFoundError(f"{not_found}; unpacking Debian's package failed: {problems}")


def prepare_prefix(prefix: Path) -> None:
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    if os.geteuid() == 0:
        # Run as root, nginx's workers drop to "nobody" and must reach the
        # temp dirs the master creates (and chowns) inside the prefix.
        for path in (prefix, prefix / "tmp"):
            path.chmod(0o755)


def nginx_command(nginx: str, prefix: Path, conf: Path, *extra: str) -> list[str]:
    error_log = prefix / "logs" / "error.log"
    return [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(error_log), *extra]


def nginx_test(
    conf: Path, prefix: Path, nginx_bin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a rendered config; the caller checks returncode and stderr."""
    return subprocess.run(
        nginx_command(nginx_bin or find_nginx(), prefix, conf, "-t", "-q"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class NginxProcess:
    process: subprocess.Popen[bytes]
    prefix: Path
    conf: Path
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def logs(self) -> str:
        parts = []
        for path in (self.prefix / "logs" / "stderr.log", self.error_log, self.access_log):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)


def _wait_until_serving(proxy: NginxProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    health_url = f"{proxy.url}{HEALTH_PATH}"  # always http://HOST:PORT/...
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(
                f"nginx exited with {proxy.process.returncode} while starting\n{proxy.logs()}"
            )
        try:
            with urllib.request.urlopen(health_url, timeout=1) as response:  # noqa: S310
                if response.status == 200 and response.read() == b"ok\n":
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(
        f"nginx did not serve {health_url} in {timeout}s: {last_error}\n{proxy.logs()}"
    )


def _stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    # SIGTERM is nginx's fast shutdown; SIGQUIT would wait for open websockets.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


@contextlib.contextmanager
def run_nginx(
    upstreams: Sequence[str],
    listen_port: int,
    *,
    listen_host: str = "127.0.0.1",
    nginx_bin: str | None = None,
    startup_timeout: float = 10.0,
    keep_prefix: bool | None = None,
) -> Iterator[NginxProcess]:
    """Start nginx in front of `upstreams` ("HOST:PORT"), yield it, stop it.

    The prefix is removed afterwards unless keep_prefix (or $NGINX_HARNESS_KEEP=1),
    handy for reading the logs of a failed test.
    """
    if keep_prefix is None:
        keep_prefix = os.environ.get("NGINX_HARNESS_KEEP") == "1"
    nginx = nginx_bin or find_nginx()
    prefix = Path(tempfile.mkdtemp(prefix="order-nginx-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        prepare_prefix(prefix)
        conf = prefix / "nginx.conf"
        conf.write_text(render_local_config(upstreams, f"{listen_host}:{listen_port}", prefix))
        with open(prefix / "logs" / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                nginx_command(nginx, prefix, conf, "-g", "daemon off;"),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        proxy = NginxProcess(process, prefix, conf, listen_host, listen_port)
        _wait_until_serving(proxy, startup_timeout)
        yield proxy
    finally:
        if process is not None:
            _stop(process)
        if not keep_prefix:
            shutil.rmtree(prefix, ignore_errors=True)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("render-compose", help="print deploy/nginx.conf as it must be committed")
    commands.add_parser(
        "ensure", help="print an nginx binary's path, unpacking Debian's if need be"
    )
    for name in ("render", "run"):
        sub = commands.add_parser(name, help=f"{name} a config for local upstreams")
        sub.add_argument("--upstream", action="append", required=True, help="HOST:PORT, repeatable")
        sub.add_argument("--listen-port", type=int, required=True)
        sub.add_argument("--listen-host", default="127.0.0.1")
        if name == "render":
            sub.add_argument("--prefix", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "render-compose":
        sys.stdout.write(render_compose_config())
    elif args.command == "ensure":
        print(ensure_nginx())
    elif args.command == "render":
        prefix = args.prefix.resolve()
        prepare_prefix(prefix)
        listen = f"{args.listen_host}:{args.listen_port}"
        sys.stdout.write(render_local_config(args.upstream, listen, prefix))
    else:
        with run_nginx(args.upstream, args.listen_port, listen_host=args.listen_host) as proxy:
            print(f"nginx on {proxy.url} (prefix {proxy.prefix}); Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                proxy.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
