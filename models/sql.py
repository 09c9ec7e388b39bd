"""Statements built from the tables with SQLAlchemy Core, run straight on the driver:
asyncpg on PostgreSQL, aiosqlite on SQLite.

A `Statement` holds a function that builds a Core construct (select, insert, update,
delete) from the tables of `models.tables`, given a `Dialect` that spells the few things
the two databases say differently (a list parameter, `INSERT ... ON CONFLICT`). Each
statement is compiled by SQLAlchemy once per dialect, the first time it runs, and the
compiled text runs on the driver connection: asyncpg keeps it prepared per connection.
No ORM session, no SQLAlchemy result objects on the request paths (see bench/NOTES.md for
what they cost).

Parameters are passed by name (the names of the statement's `bindparam`s; for inserts,
the column names); a column the caller leaves out of an insert gets the table's default
for it. Rows are read by column name into the row types of `models.rows`: the names of
a statement's result columns are known when it is compiled, so where each field is in
a row is worked out once, not per row.

SQLite arguments are converted as SQLAlchemy stores them (datetimes as UTC text,
booleans as 0/1, lists as JSON for `json_each`), so rows written here and through the
ORM look the same; on reading, its timestamps (text) and booleans (0/1) are converted
back by the row readers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    String,
    Text,
    any_,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeDecorator, TypeEngine

from infra import tracing
from models.tables import as_utc

Row = Sequence[Any]
R = TypeVar("R")
StatementListener = Callable[[str], None]


class Dialect:
    """What a statement builder may ask of the database it is compiled for."""

    def __init__(self, name: str, sa_dialect: SADialect) -> None:
        self.name = name
        self.sa = sa_dialect

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"

    def insert(self, table: Any) -> Any:
        """`INSERT` with `on_conflict_do_nothing` / `on_conflict_do_update`."""
        return (postgresql.insert if self.is_postgres else sqlite.insert)(table)

    def one_of(self, column: Any, name: str) -> ColumnElement[bool]:
        """`column` is one of the list passed as parameter `name`: `= ANY($n)` on
        PostgreSQL (one prepared statement whatever the length), `IN (SELECT value FROM
        json_each(?))` on SQLite."""
        if self.is_postgres:
            # An array of TEXT, not of VARCHAR(n): a cast to VARCHAR(n) would cut a longer
            # value down to one that matches.
            item_type = Text() if _is_text(column.type) else column.type
            values = bindparam(name, type_=postgresql.ARRAY(item_type))
            return column == any_(values)
        return column.in_(select(self.each(name, column.type)))

    def each(self, name: str, item_type: TypeEngine[Any]) -> Any:
        """The list passed as parameter `name`, as a one-column selectable."""
        if self.is_postgres:
            values = func.unnest(bindparam(name, type_=postgresql.ARRAY(item_type)))
            return values.table_valued("value").c.value
        return func.json_each(bindparam(name)).table_valued("value").c.value


def _is_text(column_type: TypeEngine[Any]) -> bool:
    """VARCHAR, TEXT, or a type that stores itself as one (SQLModel's AutoString)."""
    impl = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(impl, String)


POSTGRES = Dialect("postgresql", asyncpg_dialect())
SQLITE = Dialect("sqlite", sqlite.dialect(paramstyle="qmark"))


def _identity(value: Any) -> Any:
    return value


def _as_bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _as_timestamp(value: Any) -> Any:
    return None if value is None else as_utc(value)


class Compiled:
    """One statement compiled for one dialect: its text, its parameters in the order the
    text takes them, its result columns, and a reader per row type."""

    __slots__ = ("_converters", "_readers", "columns", "defaults", "dialect", "params", "text")

    def __init__(self, construct: Any, dialect: Dialect) -> None:
        compiled = construct.compile(dialect=dialect.sa)
        self.dialect = dialect
        self.text: str = " ".join(str(compiled).split())
        self.params: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.defaults: dict[str, Callable[[], Any]] = {
            **_literal_values(compiled, self.params),
            **_insert_defaults(construct, self.params),
        }
        result = _result_columns(construct)
        self.columns: tuple[str, ...] = tuple(result)
        self._converters: dict[str, Callable[[Any], Any]] = {}
        if not dialect.is_postgres:
            # asyncpg hands back aware datetimes and booleans; SQLite text and 0/1.
            for name, column_type in result.items():
                if isinstance(column_type, DateTime):
                    self._converters[name] = _as_timestamp
                elif isinstance(column_type, Boolean):
                    self._converters[name] = _as_bool
        self._readers: dict[tuple[type, str], Callable[[Row], Any]] = {}

    def args(self, params: dict[str, Any]) -> list[Any]:
        if not self.defaults:
            return [params[name] for name in self.params]
        return [params[name] if name in params else self.defaults[name]() for name in self.params]

    def index(self, column: str) -> int:
        """Where the result column named `column` is in a row."""
        return self.columns.index(column)

    def reader(self, row_type: type[R], prefix: str = "") -> Callable[[Row], R]:
        """Builds a `row_type` from a row: each field from the result column of its name
        (`prefix` + name, for a statement that selects several tables)."""
        key = (row_type, prefix)
        read = self._readers.get(key)
        if read is None:
            read = self._readers[key] = self._make_reader(row_type, prefix)
        return read

    def _make_reader(self, row_type: type[R], prefix: str) -> Callable[[Row], R]:
        make: Callable[..., R] = row_type
        names = [prefix + f.name for f in dataclasses.fields(row_type)]  # type: ignore[arg-type]
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise LookupError(f"{row_type.__name__}: the statement selects no {missing}")
        positions = [self.columns.index(n) for n in names]
        take = itemgetter(*positions)
        converters = [self._converters.get(n, _identity) for n in names]
        if len(positions) == 1:
            only = converters[0]
            return lambda row: make(only(take(row)))
        if all(c is _identity for c in converters):
            return lambda row: make(*take(row))
        return lambda row: make(*map(_apply, converters, take(row)))


def _apply(convert: Callable[[Any], Any], value: Any) -> Any:
    return convert(value)


def _result_columns(construct: Any) -> dict[str, TypeEngine[Any]]:
    for attribute in ("selected_columns", "exported_columns"):
        columns = getattr(construct, attribute, None)
        if columns is not None:
            return {key: column.type for key, column in columns.items()}
    return {}


def _literal_values(compiled: Any, params: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
    """The parameters SQLAlchemy made of values written in the statement (`version + 1`,
    SQLite's `OFFSET 0`): they take those values."""
    values: dict[str, Callable[[], Any]] = {}
    for name in params:
        bind = compiled.binds[name]
        if bind.value is not None or bind.callable is not None:
            values[name] = functools.partial(getattr, bind, "effective_value")
    return values


def _insert_defaults(construct: Any, params: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
    """For an insert: what a column takes when the caller leaves it out. The table's
    default if it has one (SQLAlchemy adds a parameter for each such column), else NULL
    if it may be NULL; a column with neither must be given."""
    if not getattr(construct, "is_insert", False):
        return {}
    defaults: dict[str, Callable[[], Any]] = {}
    for column in construct.table.columns:
        default = column.default
        if column.key not in params:
            continue
        if default is not None and default.is_callable:
            defaults[column.key] = functools.partial(default.arg, None)
        elif default is not None and default.is_scalar:
            defaults[column.key] = functools.partial(_identity, default.arg)
        elif column.nullable:
            defaults[column.key] = functools.partial(_identity, None)
    return defaults


class Statement:
    """One statement, built from the tables; module-level constants, compiled once per
    dialect on first use."""

    __slots__ = ("_build", "_pg", "_sqlite")

    def __init__(self, build: Callable[[Dialect], Executable]) -> None:
        self._build = build
        self._pg: Compiled | None = None
        self._sqlite: Compiled | None = None

    def compiled(self, dialect: Dialect) -> Compiled:
        if dialect.is_postgres:
            if self._pg is None:
                self._pg = Compiled(self._build(dialect), dialect)
            return self._pg
        if self._sqlite is None:
            self._sqlite = Compiled(self._build(dialect), dialect)
        return self._sqlite

    @property
    def pg(self) -> str:
        return self.compiled(POSTGRES).text

    @property
    def sqlite(self) -> str:
        return self.compiled(SQLITE).text

    def __repr__(self) -> str:
        return f"Statement({self.pg!r})"


class Connection(Protocol):
    """A driver connection, and the ways a statement is run on it."""

    dialect: Dialect

    async def fetch(self, stmt: Statement, /, **params: Any) -> list[Row]:
        """The rows as the driver gives them (read them with `Compiled.reader`)."""
        ...

    async def rows(self, stmt: Statement, row_type: type[R], /, **params: Any) -> list[R]: ...

    async def one(self, stmt: Statement, row_type: type[R], /, **params: Any) -> R | None:
        """The first row, if any."""
        ...

    async def value(self, stmt: Statement, /, **params: Any) -> Any:
        """The first column of the first row; None without rows."""
        ...

    async def execute(self, stmt: Statement, /, **params: Any) -> int:
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
    dialect = POSTGRES

    def __init__(self, conn: Any, listeners: list[StatementListener]) -> None:
        self._conn = conn
        self._listeners = listeners

    def _compiled(self, stmt: Statement) -> Compiled:
        compiled = stmt._pg or stmt.compiled(POSTGRES)
        if self._listeners:
            _notify(self._listeners, compiled.text)
        return compiled

    async def fetch(self, stmt: Statement, /, **params: Any) -> list[Row]:
        c = self._compiled(stmt)
        if tracing.active():
            with tracing.statement_span("postgresql", c.text):
                return list(await self._conn.fetch(c.text, *c.args(params)))
        rows: list[Row] = await self._conn.fetch(c.text, *c.args(params))
        return rows

    async def rows(self, stmt: Statement, row_type: type[R], /, **params: Any) -> list[R]:
        c = self._compiled(stmt)
        read = c.reader(row_type)
        if tracing.active():
            with tracing.statement_span("postgresql", c.text):
                return [read(r) for r in await self._conn.fetch(c.text, *c.args(params))]
        return [read(r) for r in await self._conn.fetch(c.text, *c.args(params))]

    async def one(self, stmt: Statement, row_type: type[R], /, **params: Any) -> R | None:
        c = self._compiled(stmt)
        if tracing.active():
            with tracing.statement_span("postgresql", c.text):
                row = await self._conn.fetchrow(c.text, *c.args(params))
        else:
            row = await self._conn.fetchrow(c.text, *c.args(params))
        return c.reader(row_type)(row) if row is not None else None

    async def value(self, stmt: Statement, /, **params: Any) -> Any:
        c = self._compiled(stmt)
        if tracing.active():
            with tracing.statement_span("postgresql", c.text):
                return await self._conn.fetchval(c.text, *c.args(params))
        return await self._conn.fetchval(c.text, *c.args(params))

    async def execute(self, stmt: Statement, /, **params: Any) -> int:
        c = self._compiled(stmt)
        if tracing.active():
            with tracing.statement_span("postgresql", c.text):
                return _affected(await self._conn.execute(c.text, *c.args(params)))
        return _affected(await self._conn.execute(c.text, *c.args(params)))


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
    dialect = SQLITE

    def __init__(self, conn: Any, listeners: list[StatementListener]) -> None:
        self._conn = conn
        self._listeners = listeners

    def _compiled(self, stmt: Statement) -> Compiled:
        compiled = stmt._sqlite or stmt.compiled(SQLITE)
        if self._listeners:
            _notify(self._listeners, compiled.text)
        return compiled

    async def _fetch(self, c: Compiled, params: dict[str, Any]) -> list[Row]:
        args = [_sqlite_arg(a) for a in c.args(params)]
        if tracing.active():
            with tracing.statement_span("sqlite", c.text):
                return list(await self._conn.execute_fetchall(c.text, args))
        return list(await self._conn.execute_fetchall(c.text, args))

    async def fetch(self, stmt: Statement, /, **params: Any) -> list[Row]:
        return await self._fetch(self._compiled(stmt), params)

    async def rows(self, stmt: Statement, row_type: type[R], /, **params: Any) -> list[R]:
        c = self._compiled(stmt)
        read = c.reader(row_type)
        return [read(r) for r in await self._fetch(c, params)]

    async def one(self, stmt: Statement, row_type: type[R], /, **params: Any) -> R | None:
        c = self._compiled(stmt)
        rows = await self._fetch(c, params)
        return c.reader(row_type)(rows[0]) if rows else None

    async def value(self, stmt: Statement, /, **params: Any) -> Any:
        rows = await self._fetch(self._compiled(stmt), params)
        return rows[0][0] if rows else None

    async def execute(self, stmt: Statement, /, **params: Any) -> int:
        c = self._compiled(stmt)
        args = [_sqlite_arg(a) for a in c.args(params)]
        if tracing.active():
            with tracing.statement_span("sqlite", c.text):
                async with self._conn.execute(c.text, args) as cursor:
                    return int(cursor.rowcount)
        async with self._conn.execute(c.text, args) as cursor:
            return int(cursor.rowcount)

    async def run_script(self, sql: str) -> None:
        """BEGIN, COMMIT and ROLLBACK (no listeners: they are not statements of ours)."""
        await self._conn.execute(sql)
