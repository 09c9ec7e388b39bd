"""A generator of hostile GraphQL documents, by family and size (issue 14).

Each family grows one dimension of a document: fragment doubling, wide fragments, nested
spreads, repeated fields, aliases, directives, deep nesting, huge variables and lists,
long strings, unicode. Sizes go from small (valid, answered) through the token limit to
bodies of up to MAX_BODY_BYTES, so that both the limits and what they let through are
exercised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 1_000_000
MAX_TOKENS = 4000
# Document sizes (the family's unit: levels, fields, items, characters...).
SIZES = (1, 4, 16, 30, 64, 256, 1000, 4000, 16_000, 64_000, 250_000, 900_000)


@dataclass(frozen=True)
class Generated:
    family: str
    size: int
    body: bytes


def _body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"query": query, "variables": variables or {}}).encode()


def fragment_doubling(n: int) -> bytes:
    """`...F ...F` at each of n levels: 2^n paths through n+1 fragments."""
    return _body(
        "query { ...F0 } "
        + "".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }} " for i in range(n))
        + f"fragment F{n} on Query {{ __typename }}"
    )


def wide_fragments(n: int) -> bytes:
    """n fragments, each spread once side by side, each selecting the same fields."""
    return _body(
        "{ me { "
        + " ".join(f"...W{i}" for i in range(n))
        + " } } "
        + " ".join(f"fragment W{i} on User {{ id email role }}" for i in range(n))
    )


def nested_spreads(n: int) -> bytes:
    """A chain of n fragments, each spreading the next (and a field of its own)."""
    return _body(
        "{ me { ...N0 } } "
        + "".join(f"fragment N{i} on User {{ id ...N{i + 1} }} " for i in range(n))
        + f"fragment N{n} on User {{ email }}"
    )


def repeated_fields(n: int) -> bytes:
    """`me { id }` n times (field merging compares every pair)."""
    return _body("{" + " me { id }" * n + " }")


def aliases(n: int) -> bytes:
    return _body("{ " + " ".join(f"a{i}: __typename" for i in range(n)) + " }")


def directives(n: int) -> bytes:
    return _body("{ __typename " + "@include(if: true) " * n + "}")


def deep_nesting(n: int) -> bytes:
    return _body("{ " + "me { " * n + "id" + " }" * n + " }")


def huge_variables(n: int) -> bytes:
    """An order of n lines as a variable (input coercion of a long list)."""
    items = [{"sku": f"S{i}", "qty": 1} for i in range(n)]
    return _body(
        "mutation($i: CreateOrderInput!) { createOrder(input: $i) { id } }",
        {"i": {"clientToken": "hostile", "items": items}},
    )


def huge_list_literal(n: int) -> bytes:
    """A list literal of n items in an argument."""
    return _body("{ orders(q: [" + ", ".join(["1"] * n) + "]) { total } }")


def long_strings(n: int) -> bytes:
    return _body('{ orders(q: "' + "x" * n + '") { total } }')


def unicode(n: int) -> bytes:
    """Multi-byte text (2, 3 and 4 bytes a character, and escapes) in a comment and a
    string; names cannot hold it, so the small sizes also try one in a name."""
    text = "é😀中\\u00e9" * max(1, n // 4)
    name = " ü: __typename" if n < 30 else ""
    return _body(f'# {text}\n{{ orders(q: "{text}") {{ total }}{name} }}')


FAMILIES: dict[str, Callable[[int], bytes]] = {
    "fragment doubling": fragment_doubling,
    "wide fragments": wide_fragments,
    "nested spreads": nested_spreads,
    "repeated fields": repeated_fields,
    "aliases": aliases,
    "directives": directives,
    "deep nesting": deep_nesting,
    "huge variables": huge_variables,
    "huge list literal": huge_list_literal,
    "long strings": long_strings,
    "unicode": unicode,
}


def generate() -> Iterator[Generated]:
    """Every family at every size whose body fits in MAX_BODY_BYTES (and the first size
    past it, which must be refused with 413)."""
    for family, make in FAMILIES.items():
        for size in SIZES:
            body = make(size)
            yield Generated(family, size, body)
            if len(body) > MAX_BODY_BYTES:
                break
