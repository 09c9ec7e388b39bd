"""The per-request overhead workload: `{ __typename }` against a bare route."""

from __future__ import annotations

import httpx

from bench.load import LoadSpec
from bench.measure import Workload, check_graphql, graphql_body, json_headers
from bench.runs import Run


def overhead_workloads(run: Run) -> list[Workload]:
    def sample_plain(url: str) -> None:
        r = httpx.get(f"{url}/bench/plain", timeout=10)
        assert r.status_code == 200 and r.json() == {"data": {"__typename": "Query"}}, r.text

    typename = graphql_body("{ __typename }", {})

    def sample_typename(url: str) -> None:
        body = check_graphql(httpx.post(f"{url}/graphql", content=typename, headers=json_headers()))
        # Besides the data, the service reports the query's cost in `extensions`.
        assert body.get("data") == {"__typename": "Query"} and "errors" not in body, body

    return [
        Workload(
            "overhead", "trivial request", "baseline", LoadSpec("GET", "/bench/plain"), sample_plain
        ),
        Workload(
            "overhead",
            "trivial request",
            "graphql",
            LoadSpec("POST", "/graphql", json_headers(), typename),
            sample_typename,
        ),
    ]
