"""The pages a browser shows (the admin, GraphiQL, the payment simulator) carry a strict
Content-Security-Policy and the other security headers (server/headers.py); GraphiQL is the
service's own build, loads nothing from another origin, says how to build it when it is not
built, and is off in production. The browser's side (no violation reported by chromium) is
in web-admin/e2e, run by scripts/admin-e2e."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.provider_server import initiate, new_order, open_client

STRONG = {
    "secret_key": "s" * 32,
    "webhook_secret": "w" * 32,
    "payment_provider_url": "https://payments.example.com",
}
HTML = {"accept": "text/html"}


def assert_security_headers(headers: Any) -> None:
    csp = headers["content-security-policy"]
    directives = dict(d.strip().partition(" ")[::2] for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no other origin
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "http" not in csp  # no other origin anywhere
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Path]:
    """A built admin and a built GraphiQL, as `npm run build` lays them out."""
    admin = tmp_path / "dist"
    (admin / "assets").mkdir(parents=True)
    (admin / "index.html").write_text('<!doctype html><script src="/admin/assets/a.js"></script>')
    (admin / "assets" / "a.js").write_text("console.log('admin')")
    giql = tmp_path / "dist-graphiql"
    (giql / "assets").mkdir(parents=True)
    (giql / "index.html").write_text(
        "<!doctype html><title>Orders · GraphiQL</title>"
        '<script type="module" src="/graphiql/assets/index-1.js"></script>'
    )
    (giql / "assets" / "index-1.js").write_text("export {}")
    return {"admin_dist_dir": admin, "graphiql_dist_dir": giql}


async def test_graphiql_is_the_services_own_build(
    settings_factory: Any, built: dict[str, Path]
) -> None:
    async with open_client(settings_factory(**built)) as client:
        page = await client.http.get("/graphql", headers=HTML)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.text == (built["graphiql_dist_dir"] / "index.html").read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from a CDN
        assert_security_headers(page.headers)

        asset = await client.http.get("/graphiql/assets/index-1.js")
        assert asset.status_code == 200
        assert asset.text == "export {}"
        assert_security_headers(asset.headers)

        # The API itself is not a page: no headers added there.
        answer = await client.http.post("/graphql", json={"query": "{ __typename }"})
        assert answer.json()["data"] == {"__typename": "Query"}
        assert "content-security-policy" not in answer.headers


async def test_graphiql_unbuilt_says_how_to_build_it(settings_factory: Any, tmp_path: Path) -> None:
    settings = settings_factory(graphiql_dist_dir=tmp_path / "nothing-here")
    async with open_client(settings) as client:
        page = await client.http.get("/graphql", headers=HTML)
        assert page.status_code == 503
        assert "npm --prefix web-admin run build" in page.text
        assert "scripts/start" in page.text
        assert "POST /graphql" in page.text
        assert "unpkg" not in page.text and "https://" not in page.text
        assert_security_headers(page.headers)
        assert (await client.http.get("/graphiql/assets/index-1.js")).status_code == 404


async def test_admin_pages_carry_the_headers(
    settings_factory: Any, built: dict[str, Path], tmp_path: Path
) -> None:
    async with open_client(settings_factory(**built)) as client:
        for path in ("/admin", "/admin/", "/admin/orders", "/admin/assets/a.js"):
            response = await client.http.get(path, follow_redirects=True)
            assert response.status_code == 200, path
            assert_security_headers(response.headers)
    # Unbuilt, the page that says so carries them too.
    async with open_client(settings_factory(admin_dist_dir=tmp_path / "none")) as client:
        response = await client.http.get("/admin/orders")
        assert response.status_code == 503
        assert_security_headers(response.headers)


async def test_simulator_pages_carry_the_headers(settings_factory: Any) -> None:
    async with open_client(settings_factory()) as client:
        token = await client.signup("headers@example.com")
        order_id = await new_order(client, token)
        payment = (await initiate(client, token, order_id)).ok()["initiatePayment"]
        path = f"/payments/simulator/{payment['id']}"
        for response in (
            await client.http.get(path),
            await client.http.post(path, data={"outcome": "SUCCESS"}),  # the 303
            await client.http.post(path, data={"outcome": "MAYBE"}),  # a 400
            await client.http.get("/payments/simulator/pay_nope"),  # a 404
        ):
            assert_security_headers(response.headers)
        assert "<script" not in (await client.http.get(path)).text


async def test_production_serves_no_graphiql(settings_factory: Any, built: dict[str, Path]) -> None:
    settings = settings_factory(app_env="production", **STRONG, **built)
    async with open_client(settings) as client:
        page = await client.http.get("/graphql", headers=HTML)
        assert "GraphiQL" not in page.text
        assert page.status_code != 200
        assert (await client.http.get("/graphiql/assets/index-1.js")).status_code == 404
        admin = await client.http.get("/admin/")
        assert admin.status_code == 200
        assert_security_headers(admin.headers)
