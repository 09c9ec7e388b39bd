"""Values remembered for as long as an object lives, and a parse cache bounded by weight.

Why not a bounded map keyed by the object's id that holds the object: such a map keeps
every document it has seen alive until it is pushed out, so a stream of distinct hostile
documents filled it with millions of long-lived AST nodes and tokens, and each full
garbage collection then paused the whole process for over 100 ms (docs/reliability.md).
Here a document's validation, its sub-selections and its plans are dropped together with
the document, and the parse cache decides alone which documents live: by count and by the
total length of their texts.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class Attached(Generic[V]):
    """One value per live object, made by `factory` on first use and dropped when the
    object is collected (a weak reference's callback). Keyed by the object's id, which
    cannot be reused while the object lives, and the reference checks it is the same one."""

    def __init__(self, factory: Callable[[], V]) -> None:
        self._factory = factory
        self._values: dict[int, tuple[weakref.ref[Any], V]] = {}

    def of(self, obj: Any) -> V:
        key = id(obj)
        entry = self._values.get(key)
        if entry is not None and entry[0]() is obj:
            return entry[1]
        value = self._factory()
        values = self._values
        # The callback runs when `obj` is deallocated, before its id can be reused.
        self._values[key] = (weakref.ref(obj, lambda _ref: values.pop(key, None)), value)
        return value

    def __len__(self) -> int:
        return len(self._values)


class WeightedCache(Generic[V]):
    """A least-recently-used map from text to value, bounded by entries and by the total
    length of the texts it keeps (a parsed document's size follows its text's)."""

    def __init__(self, *, max_entries: int, max_weight: int) -> None:
        self.max_entries = max_entries
        self.max_weight = max_weight
        self.weight = 0
        self._entries: OrderedDict[str, V] = OrderedDict()

    def get(self, text: str) -> V | None:
        value = self._entries.get(text)
        if value is not None:
            self._entries.move_to_end(text)
        return value

    def put(self, text: str, value: V) -> None:
        if len(text) > self.max_weight or text in self._entries:
            return
        self._entries[text] = value
        self.weight += len(text)
        while len(self._entries) > self.max_entries or self.weight > self.max_weight:
            dropped, _ = self._entries.popitem(last=False)
            self.weight -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)
