"""py-spy profiles of the server under load, summarised for the report.

`record_under_load` samples the server process with `py-spy record --format raw`
(collapsed stacks) while a load runs, then sums the samples two ways: by the library the
sampled frame belongs to (self time: where the CPU actually was), and by function.

py-spy stops the process for each sample. Without that (`--nonblocking`) it read stacks
while they changed: a cold read's profile put 33% of the CPU in one asyncpg call that
the bare route runs, with everything else, in a third of the time; and most stacks came
back cut short. Stopping has a bias of its own, smaller: the sample waits for a system
call to end, so lines that make one look costlier than they are (an `os.urandom` for the
request id showed 13% of a plain route's samples; taking it out saved nothing
measurable). bench/ab settles what a change saves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# py-spy names files relative to their sys.path entry ("graphql/language/visitor.py",
# "server/transport/view.py"). The first prefix that matches names the bucket.
BUCKETS: tuple[tuple[str, str], ...] = (
    ("graphql/", "graphql-core"),
    ("strawberry/", "strawberry"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("sqlmodel/", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("redis/", "redis-py"),
    ("uvicorn/", "uvicorn"),
    ("h11/", "uvicorn"),
    ("httptools/", "uvicorn"),
    ("websockets/", "uvicorn"),
    ("starlette/", "starlette"),
    ("prometheus_client/", "prometheus"),
    ("logging/", "logging"),
    ("pydantic", "pydantic"),
    ("jwt/", "pyjwt"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "asyncio"),
    ("schema/", "app: schema/"),
    ("resolvers/", "app: resolvers/"),
    ("server/", "app: server/"),
    ("infra/", "app: infra/"),
    ("models/", "app: models/"),
    ("webhooks/", "app: webhooks/"),
    ("bench/", "bench"),
)


def available() -> bool:
    return _py_spy() is not None


def py_spy_path() -> str | None:
    return _py_spy()


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def bucket_of(path: str) -> str:
    for prefix, name in BUCKETS:
        if path.startswith(prefix):
            return name
    return "other (stdlib, C)"


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part.strip())
        if m:
            out.append((m.group("func"), m.group("file")))
    return out


def summarise(raw: str, top: int = 12) -> dict[str, Any]:
    by_bucket: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = _frames(stack)
        if not frames:
            continue
        samples = int(n)
        total += samples
        func, path = frames[-1]
        by_bucket[bucket_of(path)] += samples
        short = "/".join(path.split("/")[-2:])
        by_function[f"{func} ({short})"] += samples
        # Inclusive time per library: a sample counts once for every library on its stack.
        for name in {bucket_of(p) for _, p in frames} - {"bench"}:
            inclusive[name] += samples
    return {
        "samples": total,
        "self_by_library": [(k, v / total) for k, v in by_bucket.most_common()] if total else [],
        "inclusive_by_library": [(k, v / total) for k, v in inclusive.most_common()]
        if total
        else [],
        "top_functions": [(k, v / total) for k, v in by_function.most_common(top)] if total else [],
    }


def record_under_load(
    pid: int, load: Callable[[], object], *, seconds: float, out: Path, rate: int = 250
) -> dict[str, Any]:
    py_spy = _py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy is not installed")
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            load()
        except BaseException as exc:
            errors.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        done = subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        driver.join()
    if errors:
        raise RuntimeError(f"the load failed: {errors[0]}")
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr[-1000:]}")
    return summarise(out.read_text())
