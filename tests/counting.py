"""Counting calls instead of timing them: a test that says "refused before X runs" counts
X's calls (none for the refused input, some for one that passes, so the count can fail)
rather than bounding the wall clock, which a loaded machine moves."""

from __future__ import annotations

from typing import Any

import pytest


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Counts the calls of `owner.name` (a module's function, looked up through the module,
    or a class's method) for the rest of the test; the list grows by one a call."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
