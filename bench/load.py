"""Load generation: wrk with a generated Lua script, or (without wrk) bench.pyload.

Both run as a separate process, keep `connections` requests in flight for `duration`
seconds, and report one JSON line: requests, seconds, latency percentiles, errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOKEN_PLACEHOLDER = "{token}"


@dataclass
class LoadSpec:
    """What one connection sends, over and over.

    mode "fixed":  the same request every time.
    mode "unique": `body` holds TOKEN_PLACEHOLDER once; each request puts a token there
                   that no other request of this run (any connection, any thread) uses.
    mode "lines":  each request is the next line of `lines_file` ("body<TAB>signature"),
                   sent with an X-Signature header; never reused unless the file runs out
                   (then `wrapped` counts the replays).
    """

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    mode: str = "fixed"
    token_prefix: str = "t"
    lines_file: str = ""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # connect/read/write/timeout errors and non-2xx/3xx answers
    non_2xx: int
    wrapped: int
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua_str(value: str) -> str:
    level = "=" * 4
    assert f"]{level}]" not in value
    return f"[{level}[{value}]{level}]"


def lua_script(spec: LoadSpec) -> str:
    out = [
        "local threads = {}",
        "local seq = 0",
        "function setup(thread)",
        "  thread:set('tid', seq)",
        "  seq = seq + 1",
        "  table.insert(threads, thread)",
        "end",
        f"wrk.method = {_lua_str(spec.method)}",
        f"wrk.path = {_lua_str(spec.path)}",
    ]
    for name, value in spec.headers.items():
        out.append(f"wrk.headers[ {_lua_str(name)} ] = {_lua_str(value)}")
    out.append("wrapped = 0")
    if spec.mode == "fixed":
        if spec.body:
            out.append(f"wrk.body = {_lua_str(spec.body)}")
    elif spec.mode == "unique":
        head, sep, tail = spec.body.partition(TOKEN_PLACEHOLDER)
        assert sep, "a unique-mode body needs the token placeholder"
        out += [
            f"local head, tail = {_lua_str(head)}, {_lua_str(tail)}",
            "local counter = 0",
            "local prefix = ''",
            "function init(args)",
            f"  prefix = {_lua_str(spec.token_prefix)} .. '-' .. tostring(tid) .. '-'",
            "end",
            "function request()",
            "  counter = counter + 1",
            "  return wrk.format(nil, nil, nil, head .. prefix .. counter .. tail)",
            "end",
        ]
    elif spec.mode == "lines":
        out += [
            "local reqs = {}",
            "local idx = 0",
            "function init(args)",
            "  local nthreads = tonumber(args[1] or '1')",
            "  local i = 0",
            f"  for line in io.lines({_lua_str(spec.lines_file)}) do",
            "    if i % nthreads == tid then",
            "      local body, sig = line:match('^(.-)\\t(.*)$')",
            "      local h = {}",
            "      for k, v in pairs(wrk.headers) do h[k] = v end",
            "      h['X-Signature'] = sig",
            "      reqs[#reqs + 1] = wrk.format(nil, nil, h, body)",
            "    end",
            "    i = i + 1",
            "  end",
            "end",
            "function request()",
            "  idx = idx + 1",
            "  if idx > #reqs then idx = 1; wrapped = wrapped + 1 end",
            "  return reqs[idx]",
            "end",
        ]
    else:
        raise ValueError(spec.mode)
    out += [
        "function done(summary, latency, requests)",
        "  local w = 0",
        "  for _, t in ipairs(threads) do w = w + (t:get('wrapped') or 0) end",
        "  local e = summary.errors",
        '  io.write(string.format(\'WRK_JSON {"requests":%d,"duration_us":%d,'
        '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
        '"p50":%d,"p90":%d,"p99":%d,"max":%d,"wrapped":%d}\\n\',',
        "    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,",
        "    e.timeout, latency:percentile(50), latency:percentile(90),",
        "    latency:percentile(99), latency.max, w))",
        "end",
    ]
    return "\n".join(out) + "\n"


def run_load(
    spec: LoadSpec,
    base_url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    cpus: str | None = None,
    workdir: Path,
    use_wrk: bool | None = None,
) -> LoadResult:
    """Drive `spec` against `base_url` from a separate process (pinned to `cpus`)."""
    use_wrk = have_wrk() if use_wrk is None else use_wrk
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    workdir.mkdir(parents=True, exist_ok=True)
    if use_wrk:
        script = workdir / f"load-{os.getpid()}-{id(spec)}.lua"
        script.write_text(lua_script(spec))
        cmd = [
            *pin,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base_url + spec.path,
            "--",
            str(threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
        d = json.loads(line.removeprefix("WRK_JSON "))
        errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
        return LoadResult(
            requests=d["requests"],
            seconds=d["duration_us"] / 1e6,
            p50_ms=d["p50"] / 1000,
            p90_ms=d["p90"] / 1000,
            p99_ms=d["p99"] / 1000,
            max_ms=d["max"] / 1000,
            errors=errors,
            non_2xx=d["status"],
            wrapped=d["wrapped"],
            tool="wrk",
        )
    spec_file = workdir / f"load-{os.getpid()}-{id(spec)}.json"
    spec_file.write_text(json.dumps(asdict(spec)))
    cmd = [
        *pin,
        sys.executable,
        "-m",
        "bench.pyload",
        base_url,
        str(spec_file),
        str(duration),
        str(connections),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"bench.pyload failed:\n{out.stdout}\n{out.stderr}")
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return LoadResult(**d, tool="pyload")
