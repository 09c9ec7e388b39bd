"""Browsers' graphql-ws cannot read binary frames: every message must be a text frame."""

from __future__ import annotations

import json
from pathlib import Path

import websockets

from tests.live import live_server
from tests.live_api import live_client


async def test_ack_and_events_arrive_as_text_frames(database_url: str, tmp_path: Path) -> None:
    with live_server({"DATABASE_URL": database_url}, tmp_path) as server:
        async with live_client(server.url, database_url) as client:
            token = await client.signup("frames@example.com")
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
