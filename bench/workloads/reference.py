"""The reference servers: the same page from stock Strawberry and the issue's peers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from bench.database import analyze
from bench.load import LoadSpec
from bench.measure import ORDERS_QUERY, Workload, check_graphql, graphql_body, json_headers, measure
from bench.runs import Run
from bench.workloads.postgraphile import postgraphile_suite

REFERENCE = "reference"


def reference_workloads(run: Run) -> list[Workload]:
    """The issue's four reference figures: a bare Starlette route and stock Strawberry,
    on a trivial request and on the read workloads' page (bench/reference_app.py)."""
    typename = graphql_body("{ __typename }", {})
    page_body = graphql_body(ORDERS_QUERY, {"limit": 10})
    reader = json_headers(run.tokens["reader"])

    def sample_trivial(path: str, method: str) -> Callable[[str], None]:
        def check(url: str) -> None:
            content = typename if method == "POST" else None
            r = httpx.request(method, url + path, content=content, headers=json_headers())
            assert r.status_code == 200 and r.json() == {"data": {"__typename": "Query"}}, r.text

        return check

    def sample_page(path: str) -> Callable[[str], None]:
        def check(url: str) -> None:
            asyncio.run(analyze(run))
            answer = check_graphql(httpx.post(url + path, content=page_body, headers=reader))
            run.check_page("the reference's " + path, answer)

        return check

    return [
        Workload(
            "overhead",
            "trivial request",
            "bare",
            LoadSpec("GET", "/plain"),
            sample_trivial("/plain", "GET"),
        ),
        Workload(
            "overhead",
            "trivial request",
            "stock",
            LoadSpec("POST", "/graphql", json_headers(), typename),
            sample_trivial("/graphql", "POST"),
        ),
        Workload(
            "reads_cold",
            "orders(limit: 10)",
            "bare",
            LoadSpec("POST", "/orders", reader, page_body),
            sample_page("/orders"),
        ),
        Workload(
            "reads_cold",
            "orders(limit: 10)",
            "stock",
            LoadSpec("POST", "/graphql", reader, page_body),
            sample_page("/graphql"),
        ),
    ]


def reference_suite(run: Run, *, wait: bool = True) -> None:
    """The reference servers on one pinned worker, as the issue measured them, then
    PostGraphile (issue 19) on the same core."""
    server = run.start_server(REFERENCE, workers=1, pinned=True, reference=True)
    try:
        for w in reference_workloads(run):
            measure(run, server, w, config=REFERENCE)
    finally:
        run.stop_server(server, wait=wait)
    postgraphile_suite(run)
