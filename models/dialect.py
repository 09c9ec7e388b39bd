"""The few statements that PostgreSQL and SQLite spell differently."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def _insert_for(session: AsyncSession, table: Any) -> Any:
    name = session.bind.dialect.name if session.bind is not None else "postgresql"
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


def insert_ignoring_conflict(
    session: AsyncSession, table: Any, values: dict[str, Any], index_elements: list[str]
) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: on PostgreSQL it waits for a racing insert
    of the same key to commit or roll back, so the loser can then read the winner."""
    return (
        _insert_for(session, table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=index_elements)
    )


def upsert(
    session: AsyncSession, table: Any, values: dict[str, Any], index_elements: list[str]
) -> Any:
    stmt = _insert_for(session, table).values(**values)
    updates = {k: stmt.excluded[k] for k in values if k not in index_elements}
    return stmt.on_conflict_do_update(index_elements=index_elements, set_=updates)
