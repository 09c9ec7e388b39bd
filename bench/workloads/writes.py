"""The write workloads: createOrder and updateOrderStatus."""

from __future__ import annotations

import asyncio

import httpx

from bench.database import count
from bench.load import TOKEN_PLACEHOLDER, LoadResult, LoadSpec
from bench.measure import (
    CREATE_MUTATION,
    ITEMS,
    Workload,
    check_graphql,
    graphql_body,
    json_headers,
)
from bench.runs import Run


def write_workloads(run: Run, config: str) -> list[Workload]:
    token = run.tokens["writer"]
    writer = run.users["writer"]
    headers = json_headers(token)
    template = graphql_body(
        CREATE_MUTATION, {"input": {"clientToken": TOKEN_PLACEHOLDER, "items": ITEMS}}
    )
    out = []
    for side, path in (("baseline", "/bench/create-order"), ("graphql", "/graphql")):
        prefix = f"{config}-{side}"

        def sample(url: str, path: str = path, prefix: str = prefix) -> None:
            body = template.replace(TOKEN_PLACEHOLDER, f"{prefix}-check")
            answer = check_graphql(httpx.post(url + path, content=body, headers=headers))
            assert answer["data"]["createOrder"]["status"] == "PENDING", answer

        def after(result: LoadResult, prefix: str = prefix) -> None:
            made = asyncio.run(
                count(
                    run,
                    "SELECT count(*) FROM orders WHERE user_id = $1 AND client_token LIKE $2",
                    writer,
                    f"{prefix}-0-%",
                )
            )
            if not result.requests <= made <= result.requests + run.args.connections:
                raise AssertionError(f"{result.requests} answers but {made} new orders")

        out.append(
            Workload(
                "writes",
                "createOrder, unique tokens",
                side,
                LoadSpec("POST", path, headers, template, mode="unique", token_prefix=prefix),
                sample,
                after,
            )
        )
    return out
