"""Payment webhook routes (issue 3)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def webhook_routes() -> list[BaseRoute]:
    return []
