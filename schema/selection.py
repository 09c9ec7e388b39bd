"""What a query selected, so that use cases load only the children that are asked for."""

from __future__ import annotations

from collections.abc import Iterable

from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from resolvers.orders import Include


def _fields(selections: Iterable[Selection]) -> Iterable[SelectedField]:
    for sel in selections:
        if isinstance(sel, SelectedField):
            yield sel
        elif isinstance(sel, (FragmentSpread, InlineFragment)):
            yield from _fields(sel.selections)


def _children(selections: Iterable[Selection], name: str) -> list[Selection]:
    out: list[Selection] = []
    for f in _fields(selections):
        if f.name == name:
            out.extend(f.selections)
    return out


def order_include(info: Info, *path: str) -> Include:
    """Include flags for the Order objects found at `path` below the current field."""
    selections: list[Selection] = []
    for f in info.selected_fields:
        selections.extend(f.selections)
    for name in path:
        selections = _children(selections, name)
    names = {f.name for f in _fields(selections)}
    return Include(lines="items" in names, user="user" in names, payment="payment" in names)
