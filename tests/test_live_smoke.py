from pathlib import Path

import httpx

from tests.live import live_server


def test_serve_answers_graphql(database_url: str, tmp_path: Path) -> None:
    with live_server({"DATABASE_URL": database_url}, tmp_path) as server:
        r = httpx.post(f"{server.url}/graphql", json={"query": "{ products { sku } }"})
        assert r.status_code == 200
        assert {"sku": "WIDGET-001"} in r.json()["data"]["products"]
