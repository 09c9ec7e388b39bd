"""Browsers' graphql-ws cannot read binary frames: every message must be a text frame."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import websockets

from tests.client import PASSWORD
from tests.live import live_server


async def test_ack_and_events_arrive_as_text_frames(database_url: str, tmp_path: Path) -> None:
    with live_server({"DATABASE_URL": database_url}, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            signup = await http.post(
                "/graphql",
                json={
                    "query": "mutation($i: SignupInput!) { signup(input: $i) { accessToken } }",
                    "variables": {"i": {"email": "frames@example.com", "password": PASSWORD}},
                },
            )
            token = signup.json()["data"]["signup"]["accessToken"]
        async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
                )
            )
            ack = await ws.recv()
            assert isinstance(ack, str)
            assert json.loads(ack)["type"] == "connection_ack"
            await ws.send(json.dumps({"type": "ping"}))
            pong = await ws.recv()
            assert isinstance(pong, str)
