"""The webhook workload: signed payment callbacks."""

from __future__ import annotations

import asyncio
import shutil

import httpx

from bench.database import count, payment_batch
from bench.load import LoadResult, LoadSpec
from bench.measure import Workload, json_headers
from bench.runs import Run


def webhook_workloads(run: Run, config: str, expected_rps: dict[str, float]) -> list[Workload]:
    out = []
    for side, path in (("baseline", "/bench/webhook"), ("graphql", "/payments/webhook")):
        size = max(200, int(expected_rps[side] * run.args.duration * 1.5))
        tag, lines, made = asyncio.run(payment_batch(run, size + 1))
        with open(lines) as f:
            first = f.readline()
        rest = run.workdir / f"{lines.stem}-load.tsv"
        with open(lines) as src, open(rest, "w") as dst:
            src.readline()
            shutil.copyfileobj(src, dst)

        def sample(url: str, path: str = path, line: str = first) -> None:
            body, _, sig = line.rstrip("\n").partition("\t")
            r = httpx.post(url + path, content=body, headers={**json_headers(), "X-Signature": sig})
            assert r.status_code == 200 and r.json().get("status") == "processed", r.text

        def after(result: LoadResult, tag: str = tag, made: int = made - 1) -> None:
            paid = asyncio.run(
                count(
                    run,
                    "SELECT count(*) FROM payments WHERE id LIKE $1 AND status = 'SUCCEEDED'",
                    f"pay_{tag}-%",
                )
            )
            paid -= 1  # the sample
            low = min(result.requests, made)
            if not low <= paid <= min(made, result.requests + run.args.connections):
                raise AssertionError(f"{result.requests} answers but {paid} payments succeeded")

        out.append(
            Workload(
                "webhooks",
                "SUCCESS webhook, each for its own payment",
                side,
                LoadSpec("POST", path, json_headers(), mode="lines", lines_file=str(rest)),
                sample,
                after,
                warmup=False,
            )
        )
    return out
