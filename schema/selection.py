"""What a query selected, so that use cases load only the children that are asked for.

Read from the document itself (the field's nodes and the document's fragments), not from
Strawberry's `selected_fields`, which converts the whole selection into objects of its own
on every call. Directives are not evaluated: a field under `@skip`/`@include` counts as
selected, which at worst loads a child that is then not returned. The answer depends on
the document alone, so it is remembered per field node (documents are shared between
requests by the parser cache).

That reading needs the field's nodes, which Strawberry's `Info` keeps in `_raw_info`; with
FAST_PATHS=off the same flags are read from the public `info.selected_fields` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionNode,
)
from strawberry.types import Info
from strawberry.types.nodes import SelectedField, Selection

from infra.memo import Attached
from resolvers.orders import Include

# Per operation (kept while its document lives, infra/memo.py): (ids of the field nodes,
# path) -> (the nodes, whose ids these are, and the answer). A bounded map of nodes held
# for their ids kept every document it saw alive, tokens and all.
_remembered: Attached[dict[tuple[object, ...], tuple[tuple[FieldNode, ...], Include]]] = Attached(
    dict
)


def _fields(
    selections: Iterable[SelectionNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> Iterable[FieldNode]:
    for sel in selections:
        if isinstance(sel, FieldNode):
            yield sel
        elif isinstance(sel, InlineFragmentNode):
            yield from _fields(sel.selection_set.selections, fragments, seen)
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:  # a cycle is invalid anyway
                yield from _fields(fragment.selection_set.selections, fragments, seen | {name})


def _children(
    fields: Iterable[FieldNode], name: str, fragments: Mapping[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    out: list[FieldNode] = []
    for field in fields:
        if field.name.value == name and field.selection_set is not None:
            out.extend(_fields(field.selection_set.selections, fragments))
    return out


def _include(
    nodes: tuple[FieldNode, ...],
    path: tuple[str, ...],
    fragments: Mapping[str, FragmentDefinitionNode],
) -> Include:
    fields: list[FieldNode] = []
    for node in nodes:
        if node.selection_set is not None:
            fields.extend(_fields(node.selection_set.selections, fragments))
    for name in path:
        fields = _children(fields, name, fragments)
    names = {f.name.value for f in fields}
    return Include(lines="items" in names, user="user" in names, payment="payment" in names)


def order_include(info: Info, *path: str) -> Include:
    """Include flags for the Order objects found at `path` below the current field."""
    if not info.context.settings.fast_paths:
        return _include_public(info.selected_fields, path)
    raw = info._raw_info
    nodes = tuple(raw.field_nodes)
    key = (*(id(n) for n in nodes), *path)
    remembered = _remembered.of(raw.operation)
    known = remembered.get(key)
    if known is not None and all(a is b for a, b in zip(known[0], nodes, strict=True)):
        return known[1]
    include = _include(nodes, path, raw.fragments)
    remembered[key] = (nodes, include)
    return include


def _selected(selections: Iterable[Selection]) -> Iterator[SelectedField]:
    for sel in selections:
        if isinstance(sel, SelectedField):
            yield sel
        else:  # a fragment spread or inline fragment, its selections resolved
            yield from _selected(sel.selections)


def _include_public(current: list[Selection], path: tuple[str, ...]) -> Include:
    """`_include` from Strawberry's public view of the selection (FAST_PATHS=off)."""
    fields = [child for field in _selected(current) for child in _selected(field.selections)]
    for name in path:
        fields = [c for f in fields if f.name == name for c in _selected(f.selections)]
    names = {f.name for f in fields}
    return Include(lines="items" in names, user="user" in names, payment="payment" in names)
