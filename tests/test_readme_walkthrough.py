"""README.md's "A session in GraphiQL", run as written against a real server: every
```graphql block in order, on a freshly seeded database and again on the database the first
pass (and seed-demo, twice) left behind. A block that errors fails the test.

What a reader does between the blocks, this test does the same way:
- after `Login` / `AdminLogin`, the headers pane holds that answer's `accessToken`
  (`{"Authorization": "Bearer <accessToken>"}`): later blocks are sent with it;
- `"<order id>"` is replaced by the `id` that `CreateOrder` answered;
- on a used database the reader picks a new `clientToken`, as the README says: the second pass
  replaces `my-first-order` by `my-second-order` (and the first token, sent again, returns the
  first order, already shipped: the reason the README asks for a new one);
- after `Pay`, the reader opens the `redirectUrl` and presses Succeed: this test posts the
  simulator's form and loads the page it is redirected to, which must show `PAID · version 2`,
  the version the README's `Ship` block uses;
- a `subscription` block is opened over the websocket (graphql-transport-ws, the token in
  `connection_init`) with the token of the headers pane at that point, and must receive the
  status change that the later blocks make.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse

from tests.live import REPO, LiveServer, live_server
from tests.ws_client import TRANSPORT, WSClient

SECTION = "## A session in GraphiQL"
ORDER_ID = "<order id>"
FIRST_TOKEN = "my-first-order"


def readme_blocks(text: str) -> list[str]:
    """The ```graphql blocks of the walk-through section, in order (as
    web-admin/graphiql/walkthrough.ts reads them for GraphiQL's default tabs)."""
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    section = text[start : end if end >= 0 else None]
    return [b.strip() for b in re.findall(r"^```graphql\n(.*?)^```", section, re.M | re.S)]


def operation(block: str) -> tuple[str, str]:
    """(type, name) of a block's single operation; the README names each one, so that
    GraphiQL can run them from one tab."""
    definitions = parse(block).definitions
    assert len(definitions) == 1, block
    op = definitions[0]
    assert isinstance(op, OperationDefinitionNode) and op.name is not None, (
        f"unnamed operation in README: {block}"
    )
    return op.operation.value, op.name.value


def post(server: LiveServer, block: str, token: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(f"{server.url}/graphql", json={"query": block}, headers=headers)
    body = answer.json()
    assert answer.status_code == 200 and not body.get("errors"), f"{block}\n-> {body}"
    return dict(body["data"])


def press_succeed(redirect_url: str) -> str:
    """The simulator's Succeed button: its form's POST, then the page it redirects to."""
    page = httpx.get(redirect_url)
    assert page.status_code == 200, page.text
    action = re.search(r'<form method="post" action="([^"]+)">', page.text)
    assert action, page.text
    base = httpx.URL(redirect_url)
    posted = httpx.post(str(base.join(action.group(1))), data={"outcome": "SUCCESS"})
    assert posted.status_code == 303, posted.text
    shown = httpx.get(str(base.join(posted.headers["location"])))
    assert "The webhook answered <strong>200</strong>: processed" in shown.text
    return shown.text


async def walk(server: LiveServer, blocks: list[str], client_token: str) -> dict[str, Any]:
    """Runs the blocks as the README's reader would; returns what it saw."""
    token: str | None = None
    seen: dict[str, Any] = {}
    watchers: list[tuple[WSClient, str]] = []
    try:
        for block in blocks:
            kind, name = operation(block)
            text = block.replace(FIRST_TOKEN, client_token)
            if ORDER_ID in text:
                text = text.replace(ORDER_ID, seen["CreateOrder"]["createOrder"]["id"])
            if kind == "subscription":
                ws = await WSClient.connect(server.ws_url, token, protocol=TRANSPORT)
                before = httpx.get(f"{server.url}/debug/runtime").json()["subscribers"]
                op = await ws.subscribe(text, {})
                watchers.append((ws, op))
                # Registered before the next block changes anything (as a reader's tab is).
                for _ in range(200):
                    now = httpx.get(f"{server.url}/debug/runtime").json()["subscribers"]
                    if now > before:
                        break
                    await asyncio.sleep(0.05)
                continue
            data = await asyncio.to_thread(post, server, text, token)
            seen[name] = data
            if "login" in data:
                token = data["login"]["accessToken"]  # into the headers pane
            if "initiatePayment" in data:
                url = data["initiatePayment"]["redirectUrl"]
                seen["simulator"] = await asyncio.to_thread(press_succeed, url)
        order_id = seen["CreateOrder"]["createOrder"]["id"]
        seen["events"] = [await shipped_event(ws, op, order_id) for ws, op in watchers]
    finally:
        for ws, _ in watchers:
            await ws.close()
    return seen


async def shipped_event(ws: WSClient, op: str, order_id: str) -> dict[str, Any]:
    """The order's SHIPPED event, as the subscription delivers it. Other changes of the
    caller's orders may come first (after seed-demo, the relay publishes the demo orders')."""
    for _ in range(500):
        event = await ws.next_data(op, timeout=15)
        changed = event["orderStatusChanged"]
        if (changed["orderId"], changed["status"]) == (order_id, "SHIPPED"):
            return event
    raise AssertionError(f"no event of order {order_id}")


def seed_demo(database_url: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "seed-demo"],
        env={**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": database_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def check_pass(seen: dict[str, Any]) -> str:
    created = seen["CreateOrder"]["createOrder"]
    assert (created["status"], created["version"]) == ("PENDING", 1)
    assert seen["Pay"]["initiatePayment"]["status"] == "PENDING"
    # The simulator page shows the version the README's Ship block uses.
    assert 'id="order-status">PAID · version 2<' in seen["simulator"]
    shipped = seen["Ship"]["updateOrderStatus"]
    assert shipped == {"id": created["id"], "status": "SHIPPED", "version": 3}
    ids = [o["id"] for o in seen["MyOrders"]["orders"]["items"]]
    assert created["id"] in ids
    (event,) = seen["events"]
    assert {k: event["orderStatusChanged"][k] for k in ("orderId", "status", "version")} == {
        "orderId": created["id"],
        "status": "SHIPPED",
        "version": 3,
    }
    return str(created["id"])


@pytest.mark.timeout(180)
async def test_the_walkthrough_works_as_written_on_a_new_and_on_a_used_database(
    database_url: str, tmp_path: Path
) -> None:
    blocks = readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    kinds = [operation(b) for b in blocks]
    assert [name for _, name in kinds][:2] == ["Login", "CreateOrder"]
    assert ("subscription", "Watch") in kinds

    await asyncio.to_thread(seed_demo, database_url, tmp_path)
    env = {"DATABASE_URL": database_url, "PAYMENT_PROVIDER_URL": "", "PUBLIC_URL": ""}
    with live_server(env, tmp_path) as server:
        first = check_pass(await walk(server, blocks, FIRST_TOKEN))

        # A used database: demo data seeded again (adds nothing), the first pass's orders.
        await asyncio.to_thread(seed_demo, database_url, tmp_path)
        second = check_pass(await walk(server, blocks, "my-second-order"))
        assert second != first

        # Why the README asks for a new clientToken there: the first one returns that order.
        alice = blocks[0]
        token = (await asyncio.to_thread(post, server, alice, None))["login"]["accessToken"]
        again = await asyncio.to_thread(post, server, blocks[1], token)
        assert (again["createOrder"]["id"], again["createOrder"]["status"]) == (first, "SHIPPED")
