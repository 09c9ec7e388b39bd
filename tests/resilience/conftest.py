"""The resilience suite: faults, fuzzing and attacks against real `order-service serve`
processes on PostgreSQL + Redis, every one on loopback and bounded in time.

It runs when TEST_DATABASE_URL is PostgreSQL and TEST_REDIS_URL is set (the PostgreSQL +
Redis pass of .ci/run, or scripts/resilience), and is skipped, saying why, otherwise. At the
end of the session the ledger becomes the report (see ledger.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveServer
from tests.resilience.harness import PG_URL, REDIS_URL, pg_database, serve, server_env
from tests.resilience.ledger import LEDGER, Scenario

HERE = Path(__file__).resolve().parent
ENABLED = PG_URL.startswith("postgresql") and bool(REDIS_URL)
SKIP_REASON = (
    "the resilience suite needs PostgreSQL and Redis: set TEST_DATABASE_URL=postgresql+asyncpg://"
    "... and TEST_REDIS_URL (scripts/resilience does)"
)


# Runs on every backend: in-process tests of the bugs this suite found.
UNGATED = {"test_regressions.py"}


def _ours(path: Path | str) -> bool:
    resolved = Path(path).resolve()
    return resolved.is_relative_to(HERE) and resolved.name not in UNGATED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if _ours(item.path):
            item.add_marker(skip)


def _scenario_name(nodeid: str) -> str:
    return nodeid.split("tests/resilience/", 1)[-1]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/resilience/" not in report.nodeid or not ENABLED:
        return
    if not _ours(report.fspath):
        # The regression tests count as one scenario of the report.
        name = "test_regressions.py"
        scenario = LEDGER.scenario(name, "Regression tests of the bugs this suite found")
        if report.when == "call" and report.passed:
            scenario.check("regression tests passed")
        LEDGER.finish(name, "passed" if report.passed else "failed", report.duration)
        return
    name = _scenario_name(report.nodeid)
    if report.skipped:
        LEDGER.finish(name, "skipped", report.duration)
    elif report.failed:
        LEDGER.finish(name, "failed" if report.when == "call" else f"error in {report.when}", 0)
        LEDGER.scenario(name).seconds += report.duration
    else:
        LEDGER.finish(name, "passed", report.duration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not ENABLED or not LEDGER.ran:
        return
    from sqlalchemy.engine import make_url

    LEDGER.environment["database"] = (
        "PostgreSQL " + (make_url(PG_URL).host or "") + " (faults: a private cluster)"
    )
    LEDGER.environment["redis"] = f"{REDIS_URL} (faults: a private redis-server)"
    path = LEDGER.write()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nresilience report: {path}")


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Scenario:
    """This test's entry in the ledger, titled by the first line of its docstring."""
    doc = (request.node.function.__doc__ or "").strip().splitlines()
    return LEDGER.scenario(_scenario_name(request.node.nodeid), doc[0] if doc else "")


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """One server (and database) for the scenarios that only talk to it: fuzzing, hostile
    documents, auth and webhook attacks. Limits that would hide deeper paths are off."""
    tmp = tmp_path_factory.mktemp("shared-server")
    with pg_database() as url:
        env = server_env(
            url, rate_limit_orders_per_minute=0, rate_limit_login_failures_per_minute=0
        )
        with serve(env, tmp) as server:
            yield server, url
