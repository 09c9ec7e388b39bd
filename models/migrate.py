"""Apply the Alembic migrations; safe when several instances start at once."""

from __future__ import annotations

import asyncio
import fcntl
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from models.db import null_pool_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = zlib.crc32(b"order-service:migrations")
_LOCK_POLL_SECONDS = 0.2


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade_on(connection: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


@contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    database = make_url(url).database or "orders.db"
    path = Path(database).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _upgrade_postgres(url: str) -> None:
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            # A session-level advisory lock: the second instance waits, then finds nothing to
            # do. It waits by polling, between transactions: blocked in pg_advisory_lock it
            # would hold a snapshot, which the first instance's CREATE INDEX CONCURRENTLY
            # waits for (migration 0005): a deadlock.
            while True:
                got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_ID})
                await conn.commit()
                if got:
                    break
                await asyncio.sleep(_LOCK_POLL_SECONDS)
            try:
                await conn.run_sync(_upgrade_on, alembic_config(url))
                await conn.commit()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
                await conn.commit()
    finally:
        await engine.dispose()


async def _upgrade_sqlite(url: str) -> None:
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade_on, alembic_config(url))
            await conn.commit()
    finally:
        await engine.dispose()


async def upgrade_to_head(url: str) -> None:
    if url.startswith("sqlite"):
        with _sqlite_file_lock(url):
            await _upgrade_sqlite(url)
    else:
        await _upgrade_postgres(url)


def upgrade_to_head_sync(url: str) -> None:
    asyncio.run(upgrade_to_head(url))
