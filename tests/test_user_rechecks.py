"""Long-lived contexts (websockets) read their user again; one user's rechecks share."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update
from sqlmodel import col
from starlette.applications import Starlette

from models.tables import User
from resolvers import context as context_module
from resolvers.context import RequestContext, Services


async def test_rechecks_of_one_user_share_one_read(
    app: Starlette, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services: Services = app.state.services
    contexts = [RequestContext(services=services, request_id=f"ws{n}") for n in range(50)]
    for ctx in contexts:
        ctx.authenticate(f"Bearer {admin_token}")
    reads = 0
    load_user = RequestContext._load_user

    async def counting(self: RequestContext) -> User | None:
        nonlocal reads
        reads += 1
        return await load_user(self)

    monkeypatch.setattr(RequestContext, "_load_user", counting)
    first = await asyncio.gather(*(ctx.current_user() for ctx in contexts))
    assert reads == 50  # a context's first read is its own, as on HTTP
    assert all(u is not None and u.role == "ADMIN" for u in first)

    monkeypatch.setattr(context_module, "USER_RECHECK_SECONDS", 0.0)
    reads = 0
    again = await asyncio.gather(*(ctx.current_user() for ctx in contexts))
    assert reads == 1
    assert all(u is not None and u.role == "ADMIN" for u in again)

    # A recheck after a change reads the change.
    async with services.db.transaction() as session:
        await session.execute(
            update(User).where(col(User.email) == "admin@example.com").values(role="USER")
        )
    reads = 0
    demoted = await asyncio.gather(*(ctx.current_user() for ctx in contexts))
    assert reads == 1
    assert all(u is not None and u.role == "USER" for u in demoted)


async def test_a_failed_shared_recheck_is_not_reused(
    app: Starlette, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services: Services = app.state.services
    ctx = RequestContext(services=services, request_id="ws")
    ctx.authenticate(f"Bearer {admin_token}")
    assert await ctx.current_user() is not None
    monkeypatch.setattr(context_module, "USER_RECHECK_SECONDS", 0.0)
    load_user = RequestContext._load_user

    async def failing(self: RequestContext) -> User | None:
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(RequestContext, "_load_user", failing)
    with pytest.raises(ConnectionError):
        await ctx.current_user()
    monkeypatch.setattr(RequestContext, "_load_user", load_user)
    user = await ctx.current_user()
    assert user is not None and user.email == "admin@example.com"
