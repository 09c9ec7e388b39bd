"""Statements run straight on the driver: asyncpg on PostgreSQL, aiosqlite on SQLite.

The request paths (the caller's lookup, order reads and writes, status changes, webhooks)
run a handful of fixed statements each. Through SQLAlchemy's ORM one statement cost about
1 ms of CPU on the benchmark machine and an ORM instance about 60 µs to build, against
about 80 µs for the same statement on a bare asyncpg connection, which also keeps it
prepared (parsed and planned once per connection). So these paths write their SQL once,
run it here, and map rows to the slotted dataclasses of `models.rows`. SQLModel still
defines the tables and the migrations; ORM sessions remain for tools and tests.

A `Statement` is written for PostgreSQL with `$1`-style placeholders. Its SQLite spelling
is derived by three rules, or given explicitly where the two dialects differ more:

- `$n` becomes `?n` (SQLite's numbered parameters);
- `= ANY($n...)` becomes `IN (SELECT value FROM json_each(?n))`, and a list argument is
  passed to SQLite as JSON;
- `FOR UPDATE` is dropped (SQLite write transactions take the database lock at BEGIN).

SQLite arguments are converted as SQLAlchemy stores them (datetimes as UTC text, booleans
as 0/1), so rows written here and through the ORM look the same; its timestamps come back
as text, which `models.rows.ts` reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

Row = Sequence[Any]
StatementListener = Callable[[str], None]

_PLACEHOLDER = re.compile(r"\$(\d+)")
_ANY = re.compile(r"=\s*ANY\(\s*\$(\d+)(?:::\w+\[\])?\s*\)")
_FOR_UPDATE = re.compile(r"\s+FOR UPDATE\b")


def sqlite_spelling(pg: str) -> str:
    text = _ANY.sub(r"IN (SELECT value FROM json_each(?\1))", pg)
    text = _FOR_UPDATE.sub("", text)
    return _PLACEHOLDER.sub(r"?\1", text)


class Statement:
    """One SQL statement in both spellings; module-level constants, built once."""

    __slots__ = ("pg", "sqlite")

    def __init__(self, pg: str, *, sqlite: str | None = None) -> None:
        self.pg = " ".join(pg.split())
        self.sqlite = " ".join((sqlite or sqlite_spelling(pg)).split())

    def __repr__(self) -> str:
        return f"Statement({self.pg!r})"


class Connection(Protocol):
    """A driver connection with the four ways a statement is run."""

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]: ...

    async def fetchrow(self, stmt: Statement, *args: Any) -> Row | None: ...

    async def fetchval(self, stmt: Statement, *args: Any) -> Any: ...

    async def execute(self, stmt: Statement, *args: Any) -> int:
        """Runs a statement that returns no rows; the number of rows it changed."""
        ...


def _notify(listeners: list[StatementListener], text: str) -> None:
    for listener in listeners:
        listener(text)


def _affected(status: str) -> int:
    # asyncpg answers with the command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0".
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


class PgConnection:
    """An asyncpg connection: statements are prepared once per connection (asyncpg's
    statement cache), arguments and rows are asyncpg's own."""

    __slots__ = ("_conn", "_listeners")

    def __init__(self, conn: Any, listeners: list[StatementListener]) -> None:
        self._conn = conn
        self._listeners = listeners

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]:
        if self._listeners:
            _notify(self._listeners, stmt.pg)
        rows: list[Row] = await self._conn.fetch(stmt.pg, *args)
        return rows

    async def fetchrow(self, stmt: Statement, *args: Any) -> Row | None:
        if self._listeners:
            _notify(self._listeners, stmt.pg)
        row: Row | None = await self._conn.fetchrow(stmt.pg, *args)
        return row

    async def fetchval(self, stmt: Statement, *args: Any) -> Any:
        if self._listeners:
            _notify(self._listeners, stmt.pg)
        return await self._conn.fetchval(stmt.pg, *args)

    async def execute(self, stmt: Statement, *args: Any) -> int:
        if self._listeners:
            _notify(self._listeners, stmt.pg)
        return _affected(await self._conn.execute(stmt.pg, *args))


def _sqlite_arg(value: Any) -> Any:
    if isinstance(value, datetime):
        # SQLAlchemy's SQLite DateTime: the UTC wall clock as text, microseconds included.
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple):
        return orjson.dumps(list(value)).decode()
    return value


class SqliteConnection:
    """An aiosqlite connection taken from SQLAlchemy's pool (so it has the engine's
    pragmas), used directly."""

    __slots__ = ("_conn", "_listeners")

    def __init__(self, conn: Any, listeners: list[StatementListener]) -> None:
        self._conn = conn
        self._listeners = listeners

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]:
        if self._listeners:
            _notify(self._listeners, stmt.sqlite)
        rows = await self._conn.execute_fetchall(stmt.sqlite, [_sqlite_arg(a) for a in args])
        return list(rows)

    async def fetchrow(self, stmt: Statement, *args: Any) -> Row | None:
        rows = await self.fetch(stmt, *args)
        return rows[0] if rows else None

    async def fetchval(self, stmt: Statement, *args: Any) -> Any:
        row = await self.fetchrow(stmt, *args)
        return row[0] if row else None

    async def execute(self, stmt: Statement, *args: Any) -> int:
        if self._listeners:
            _notify(self._listeners, stmt.sqlite)
        async with self._conn.execute(stmt.sqlite, [_sqlite_arg(a) for a in args]) as cursor:
            return int(cursor.rowcount)

    async def run_script(self, sql: str) -> None:
        """BEGIN, COMMIT and ROLLBACK (no listeners: they are not statements of ours)."""
        await self._conn.execute(sql)
