"""The read workloads: the orders page, cold and warm."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from bench.database import analyze
from bench.load import LoadSpec
from bench.measure import ORDERS_QUERY, Workload, check_graphql, graphql_body, json_headers
from bench.runs import Run


def read_workloads(run: Run, key: str) -> list[Workload]:
    token = run.tokens["reader"]
    body = graphql_body(ORDERS_QUERY, {"limit": 10})
    headers = json_headers(token)

    def sample(path: str) -> Callable[[str], None]:
        def check(url: str) -> None:
            asyncio.run(analyze(run))
            answer = check_graphql(httpx.post(url + path, content=body, headers=headers))
            # The baseline must answer exactly what GraphQL answers (and the references).
            run.check_page("the service's " + path, answer)

        return check

    label = "orders(limit: 10), " + ("cache off" if key == "reads_cold" else "cache warm")
    return [
        Workload(
            key,
            label,
            "baseline",
            LoadSpec("POST", "/bench/orders", headers, body),
            sample("/bench/orders"),
        ),
        Workload(
            key, label, "graphql", LoadSpec("POST", "/graphql", headers, body), sample("/graphql")
        ),
    ]
