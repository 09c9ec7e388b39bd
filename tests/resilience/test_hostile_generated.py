"""The hostile-document generator (hostile_gen.py) against a real server: every family at
every size answered fast, with /health answering throughout."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer
from tests.resilience.harness import CONTRACT_CODES, healthy, log_mark, unexpected_errors
from tests.resilience.hostile_gen import FAMILIES, generate
from tests.resilience.ledger import Scenario

pytestmark = pytest.mark.timeout(300)

# The goal is 100 ms per answer on this machine. What a document costs the server is its
# CPU time (the wall time also counts the other processes of a shared 2-core box); both
# go to docs/reliability.md. What fails the test is what the limits exist to stop: a
# document that costs a multiple of the goal (one that wedges costs seconds, and grows
# with its size); CPU time also takes in the server's other work during the request (its
# relay, its health checks, the collector), which a loaded machine stretches.
GOAL_SECONDS = 0.1
MAX_CPU_SECONDS = 0.5
MAX_SECONDS = 2.0
HEALTH_MAX_SECONDS = 2.0
JSON = {"content-type": "application/json"}


async def _watch_health(url: str, stop: asyncio.Event, worst: list[float]) -> None:
    """Polls /health every 50 ms until `stop`; records the slowest answer (inf: none)."""
    async with httpx.AsyncClient(timeout=HEALTH_MAX_SECONDS * 2) as http:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = (await http.get(f"{url}/health")).status_code == 200
            except httpx.HTTPError:
                ok = False
            worst[0] = max(worst[0], time.perf_counter() - started if ok else float("inf"))
            worst[1] += 1
            await asyncio.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time (/proc, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _problem(response: httpx.Response) -> str | None:
    if response.status_code >= 500:
        return f"HTTP {response.status_code}"
    if response.status_code != 200:
        return None  # 413 past MAX_BODY_BYTES, 400 for what is not GraphQL
    payload = response.json()
    for error in payload.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code not in CONTRACT_CODES:
            return f"error coded {code!r}: {error.get('message', '')[:120]!r}"
    return None


async def test_generated_hostile_documents(
    shared_server: tuple[LiveServer, str], scenario: Scenario
) -> None:
    """Generated hostile documents: every family and size answered fast, /health throughout"""
    server, _ = shared_server
    mark = log_mark(server)
    pid = server.process.pid
    # family -> (wall seconds, size, body bytes, answer) of its slowest answer; its most
    # server CPU.
    worst: dict[str, tuple[float, int, int, str]] = {}
    cpu: dict[str, float] = {}
    answers: dict[str, dict[str, int]] = {family: {} for family in FAMILIES}
    problems: list[str] = []
    stop = asyncio.Event()
    health = [0.0, 0]
    watcher = asyncio.create_task(_watch_health(server.url, stop, health))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for case in generate():
                scenario.tried()
                scenario.sent()
                cpu_before = _cpu_seconds(pid)
                started = time.perf_counter()
                response = await http.post("/graphql", content=case.body, headers=JSON)
                seconds = time.perf_counter() - started
                used = _cpu_seconds(pid) - cpu_before
                outcome = str(response.status_code)
                if response.status_code == 200:
                    errors = response.json().get("errors") or []
                    first = errors[0].get("extensions") or {} if errors else {}
                    outcome = first.get("code", "?") if errors else "data"
                answers[case.family][outcome] = answers[case.family].get(outcome, 0) + 1
                if seconds > worst.get(case.family, (0.0,))[0]:
                    worst[case.family] = (seconds, case.size, len(case.body), outcome)
                cpu[case.family] = max(cpu.get(case.family, 0.0), used)
                if seconds > MAX_SECONDS or used > MAX_CPU_SECONDS:
                    problems.append(
                        f"{case.family} x{case.size}: {seconds:.2f} s, {used:.2f} s of CPU"
                    )
                if (problem := _problem(response)) is not None:
                    problems.append(f"{case.family} x{case.size}: {problem}")
    finally:
        stop.set()
        await watcher
    scenario.sent("health checks", health[1])
    scenario.check("generated documents answered", sum(sum(a.values()) for a in answers.values()))
    scenario.note(
        f"goal: every answer within {GOAL_SECONDS * 1000:.0f} ms; the most server CPU any "
        f"answer took: {max(cpu.values()) * 1000:.0f} ms (resolution "
        f"{1000 / os.sysconf('SC_CLK_TCK'):.0f} ms); the slowest wall time "
        f"{max(w[0] for w in worst.values()) * 1000:.0f} ms, on a machine shared with the "
        f"suite's clients; /health polled every 50 ms during the attack, slowest answer "
        f"{health[0] * 1000:.0f} ms"
    )
    scenario.table = [
        "| family | most server CPU (ms) | slowest wall (ms) | at size | body bytes "
        "| its answer | answers |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        *(
            f"| {family} | {cpu[family] * 1000:.0f} | {worst[family][0] * 1000:.0f} | "
            f"{worst[family][1]} | {worst[family][2]} | {worst[family][3]} | "
            + ", ".join(f"{k} x{n}" for k, n in sorted(answers[family].items()))
            + " |"
            for family in FAMILIES
            if family in worst
        ),
    ]
    surprises = unexpected_errors(server, mark)
    assert not problems, "\n".join(problems)
    assert health[0] < HEALTH_MAX_SECONDS, f"/health took {health[0]:.2f} s during the attack"
    assert not surprises, "unexpected errors in the server log:\n" + "\n".join(surprises[:10])
    assert healthy(server.url)
