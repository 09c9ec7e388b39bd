"""Rows as the request paths read them: one slotted dataclass per table, made from the
table's columns (models.tables), so a column added to a table is in its row type, and in
every row read with `SELECT` of the whole table, without another edit.

Rows are read by column name (models.sql); a statement that selects a whole table
(`*columns(Table)`) selects every field of the row type. The password hash is not among a
user's fields: nothing on a request path needs it but login, which reads it on its own.

For the type checker a row type is its table's SQLModel class: the same attribute names
and types, one place that declares them. At run time it is the dataclass (an ORM
instance costs tens of µs to build; a dataclass about one).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from sqlmodel import SQLModel

from models import tables

T = TypeVar("T")

# Columns of a table that its row type leaves out.
LEFT_OUT: dict[str, tuple[str, ...]] = {"users": ("password_hash",)}


def table_of(model: type[SQLModel]) -> Any:
    return model.__table__  # type: ignore[attr-defined]


def columns(model: type[SQLModel]) -> list[Any]:
    """The table's columns that its row type holds, in the table's order."""
    table = table_of(model)
    left_out = LEFT_OUT.get(table.name, ())
    return [c for c in table.columns if c.key not in left_out]


def row_type(model: type[SQLModel]) -> type:
    """A slotted dataclass with a field per column of `model`'s table (but those left
    out), in the table's order."""
    fields = []
    for column in columns(model):
        try:
            python_type: Any = column.type.python_type
        except NotImplementedError:
            python_type = Any
        fields.append((column.key, python_type | None if column.nullable else python_type))
    made = dataclasses.make_dataclass(f"{model.__name__}Row", fields, slots=True)
    made.__module__ = __name__
    return made


def replace(row: T, **changes: Any) -> T:
    """A copy of `row` with some fields changed (`dataclasses.replace`, typed for rows)."""
    return dataclasses.replace(row, **changes)  # type: ignore[type-var]


if TYPE_CHECKING:
    UserRow = tables.User
    ProductRow = tables.Product
    OrderRow = tables.Order
    LineRow = tables.OrderLine
    PaymentRow = tables.Payment
    OutboxRow = tables.OutboxEvent
    DeadLetterRow = tables.PaymentDeadLetter
else:
    UserRow = row_type(tables.User)
    ProductRow = row_type(tables.Product)
    OrderRow = row_type(tables.Order)
    LineRow = row_type(tables.OrderLine)
    PaymentRow = row_type(tables.Payment)
    OutboxRow = row_type(tables.OutboxEvent)
    DeadLetterRow = row_type(tables.PaymentDeadLetter)

ROW_TYPES: dict[type[SQLModel], type] = {
    tables.User: UserRow,
    tables.Product: ProductRow,
    tables.Order: OrderRow,
    tables.OrderLine: LineRow,
    tables.Payment: PaymentRow,
    tables.OutboxEvent: OutboxRow,
    tables.PaymentDeadLetter: DeadLetterRow,
}
