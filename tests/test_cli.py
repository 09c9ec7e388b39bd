"""The command line and the settings it refuses, as an operator uses them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from infra.settings import Settings
from tests.live import REPO, free_port

STRONG = "a-strong-production-secret-0123456789"


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "BCRYPT_ROUNDS": "4", **(env or {})},
    )


@pytest.mark.parametrize("variable", ["SECRET_KEY", "WEBHOOK_SECRET"])
def test_production_refuses_a_default_secret_and_names_it(variable: str) -> None:
    values = {"app_env": "production", "secret_key": STRONG, "webhook_secret": STRONG}
    values[variable.lower()] = Settings().model_dump()[variable.lower()].get_secret_value()
    with pytest.raises(ValidationError, match=variable):
        Settings(**values)  # type: ignore[arg-type]


def test_serve_in_production_without_secrets_exits_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "WEBHOOK_SECRET")}
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO), "APP_ENV": "production", "WEBHOOK_SECRET": STRONG},
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_without_redis_are_refused_with_a_reason(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--workers", "2", "--port", str(free_port()), cwd=tmp_path, env={"REDIS_URL": ""}
    )
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


def test_serve_in_an_empty_directory_answers_with_the_catalog(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        data = None
        while time.monotonic() < deadline:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json={"query": "{ products { sku priceCents } }"},
                )
                data = r.json()["data"]
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert data is not None, "no answer within 15 s"
        assert {"sku": "WIDGET-001", "priceCents": 1000} in data["products"]
        assert {"sku": "GADGET-002", "priceCents": 1000} in data["products"]
        assert (tmp_path / "orders.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_migrate_create_admin_seed_demo_and_export_schema(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    assert run_cli("migrate", env=env).returncode == 0

    made = run_cli(
        "create-admin", "--email", "Root@Example.com", "--password", "root-password", env=env
    )
    assert made.returncode == 0, made.stderr
    assert "root@example.com is an admin" in made.stdout
    again = run_cli(
        "create-admin", "--email", "root@example.com", "--password", "root-password", env=env
    )
    assert again.returncode == 0
    bad = run_cli("create-admin", "--email", "nope", "--password", "short", env=env)
    assert bad.returncode != 0 and "email" in bad.stderr

    seeded = run_cli("seed-demo", env=env)
    assert seeded.returncode == 0, seeded.stderr
    for login in ("admin@example.com", "alice@example.com", "bob@example.com"):
        assert login in seeded.stdout
    assert run_cli("seed-demo", env=env).returncode == 0  # a second run is harmless

    sdl = run_cli("export-schema")
    assert sdl.returncode == 0
    assert sdl.stdout == (REPO / "schema.graphql").read_text()


def test_two_instances_migrating_at_once_do_no_harm(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A fresh database of the backend under test, migrated by two processes at once.
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    else:
        pytest.importorskip("asyncpg")
        from sqlalchemy.engine import make_url

        name = f"race_{os.getpid()}"
        base = make_url(database_url)
        psql = ["psql", "-h", base.host or "127.0.0.1", "-U", base.username or "postgres"]
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        subprocess.run(
            [*psql, "-d", "postgres", "-qc", drop, "-c", f'CREATE DATABASE "{name}"'],
            check=True,
            capture_output=True,
        )
        # Not left behind (each run on PostgreSQL used to leave one database).
        request.addfinalizer(
            lambda: subprocess.run([*psql, "-d", "postgres", "-qc", drop], capture_output=True)
        )
        url = base.set(database=name).render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "server.cli", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outcomes
    result = run_cli("export-schema")  # the package still imports; now check the data
    assert result.returncode == 0
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio, sys\n"
            "from sqlalchemy import text\n"
            "from models.db import null_pool_engine\n"
            "async def main():\n"
            "    e = null_pool_engine(sys.argv[1])\n"
            "    async with e.connect() as c:\n"
            "        v = (await c.execute(text('select count(*) from alembic_version'))).scalar()\n"
            "        p = (await c.execute(text('select count(*) from products'))).scalar()\n"
            "    await e.dispose()\n"
            "    print(v, p)\n"
            "asyncio.run(main())\n",
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert check.stdout.split() == ["1", "2"], check.stderr
