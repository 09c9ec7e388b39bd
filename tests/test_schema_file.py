from pathlib import Path

from server.assembly import export_sdl

REPO = Path(__file__).resolve().parent.parent


def test_checked_in_sdl_matches_the_server() -> None:
    assert (REPO / "schema.graphql").read_text() == export_sdl(), (
        "schema.graphql is stale: run `order-service export-schema > schema.graphql`"
    )
