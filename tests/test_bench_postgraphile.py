"""bench/run's PostGraphile comparison (issue 19): PostGraphile's answer, mapped to the
service's shape, equals the service's answer for the same rows (the run compares them and
fails on any difference); the statement log is read whatever the log line prefix; the
report prints issue 19's table with its "before" column, or why PostGraphile was not
measured."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bench import page, report
from bench.workloads.postgraphile import LOGGED, as_service_page

CREATED = [datetime(2026, 12, 6, 19, 49, 57, 515520, tzinfo=UTC), datetime(2026, 12, 6, 19, 0)]


def _rows() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    caller = {"id": 7, "email": "reader@bench.example.com", "role": "USER"}
    rows = []
    for n, (order_id, created) in enumerate(zip((12, 11), CREATED, strict=True)):
        for line_id, sku, qty in ((2 * n + 1, "GADGET-002", 1), (2 * n + 2, "WIDGET-001", 2)):
            rows.append(
                {
                    "t_total": 12,
                    page.ORDER_ID: order_id,
                    page.STATUS: "PENDING",
                    page.VERSION: 1,
                    page.AMOUNT: 3000,
                    page.CREATED: created,
                    page.LINE_ID: line_id,
                    page.SKU: sku,
                    page.QTY: qty,
                    page.UNIT_PRICE: 1000,
                }
            )
    return caller, rows


def _postgraphile_answer(created: list[str]) -> dict[str, Any]:
    lines = [
        {"sku": "GADGET-002", "qty": 1, "unitPriceCents": 1000},
        {"sku": "WIDGET-001", "qty": 2, "unitPriceCents": 1000},
    ]
    user = {"id": 7, "email": "reader@bench.example.com", "role": "USER"}
    return {
        "data": {
            "allOrders": {
                "totalCount": 12,
                "nodes": [
                    {
                        "id": order_id,
                        "status": "PENDING",
                        "version": 1,
                        "amountCents": 3000,
                        "createdAt": at,
                        "orderLinesByOrderId": {"nodes": lines},
                        "userByUserId": user,
                    }
                    for order_id, at in zip((12, 11), created, strict=True)
                ],
            }
        }
    }


@pytest.mark.parametrize(
    "created",
    [
        # timestamptz as PostGraphile prints it (trailing zeros of the fraction dropped) ...
        ["2026-12-06T19:49:57.51552+00:00", "2026-12-06T19:00:00+00:00"],
        # ... and a timestamp without time zone, which the service reads as UTC.
        ["2026-12-06T19:49:57.515520", "2026-12-06T19:00:00"],
    ],
)
def test_postgraphile_page_maps_to_the_services_answer(created: list[str]) -> None:
    caller, rows = _rows()
    assert as_service_page(_postgraphile_answer(created), 10) == page.as_json(caller, rows, 10)


def test_a_different_page_does_not_map_to_the_same_answer() -> None:
    caller, rows = _rows()
    answer = _postgraphile_answer(["2026-12-06T19:49:57.51552+00:00", "2026-12-06T19:00:00"])
    answer["data"]["allOrders"]["nodes"][1]["orderLinesByOrderId"]["nodes"][1]["qty"] = 3
    assert as_service_page(answer, 10) != page.as_json(caller, rows, 10)


def test_an_answer_with_errors_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="permission denied"):
        as_service_page({"errors": [{"message": "permission denied for table orders"}]}, 10)


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("2026-12-06 19:48:16.857 UTC [19670] LOG:  statement: begin", ("19670", "begin")),
        (
            "2026-12-06 19:48:16.862 UTC [19670] bench_pgl_probe_x@bench_1 LOG:  execute "
            "<unnamed>: select set_config($1, $2, true)",
            ("19670", "select set_config($1, $2, true)"),
        ),
        ("2026-12-06 19:48:17.461 UTC [2244] LOG:  checkpoint starting: time", None),
    ],
)
def test_statements_are_read_from_the_log_whatever_its_prefix(
    line: str, found: tuple[str, str] | None
) -> None:
    match = LOGGED.search(line)
    assert (match.groups() if match else None) == found


def _row(config: str, key: str, side: str, rps: float, **more: Any) -> dict[str, Any]:
    return {
        "config": config,
        "workload": key,
        "side": side,
        "rps": rps,
        "p50_ms": 10.0,
        "p99_ms": 14.0,
        "cpu_us_per_request": 1e6 / rps,
        **more,
    }


def test_the_report_prints_issue_19s_table_beside_before() -> None:
    results = [
        _row("reference", "overhead", "stock", 2000),
        _row("reference", "reads_cold", "stock", 300),
        _row("peers", "overhead", "postgraphile", 9000),
        _row("peers", "reads_cold", "postgraphile", 1600, db_cpu_us_per_request=500.0),
        _row("peers", "overhead", "postgraphile-auth", 4000, db_xacts_per_request=1.0),
        _row(
            "peers",
            "reads_cold",
            "postgraphile-auth",
            1000,
            db_cpu_us_per_request=600.0,
            db_xacts_per_request=1.0,
        ),
        _row("peers", "overhead", "graphql", 3000),
        _row(
            "peers",
            "reads_cold",
            "graphql",
            1200,
            db_cpu_us_per_request=540.0,
            db_xacts_per_request=1.0,
        ),
        _row("peers", "reads_warm", "graphql", 2600, db_xacts_per_request=0.0),
        # The service's own tables (not the comparison's rounds) do not enter it.
        _row("1w-pinned", "reads_cold", "graphql", 50, db_xacts_per_request=9.0),
    ]
    found = {"page_statements": 4.0, "typename_statements": 3.0, "forged_status": 401}
    text = "\n".join(report._postgraphile_section(results, found))
    assert (
        "| page, cache off | 300 (3,333) | 1,200 (833) | 1,600 (625) | 1,000 (1,000) | 1.20 |"
        in (text)
    )
    assert "| cold page vs PostGraphile with auth | 0.54 (vs without auth) | 1.20 (0.75) |" in text
    assert (
        "| PostgreSQL CPU per cold page vs PostGraphile | 1.48 | 0.90 (1.08) | ≤ 1.0 | yes |"
        in (text)
    )
    assert "| statements per cold / warm read | 2.02 / 1.01 | 1.00 / 0.00 | 1 / 0 | yes |" in text
    assert (
        "| warm page vs PostGraphile with auth | 1.69 (vs without auth) | 2.60 (1.62) | ≥ 2.5 | yes |"
        in (text)
    )
    assert (
        "| `{ __typename }` vs PostGraphile with auth | 0.33 (vs without auth) | 0.75 (0.33) |"
        in (text)
    )
    assert "4.00 statements per page" in text and "HTTP 401" in text


def test_the_report_says_why_postgraphile_was_not_measured() -> None:
    text = "\n".join(report._postgraphile_section([], {"skipped": "node is not installed"}))
    assert "Not measured: node is not installed." in text


def test_rounds_are_reported_by_their_medians() -> None:
    from bench.workloads.postgraphile import median_row

    rows = [
        _row("peers", "reads_cold", "graphql", rps, db_xacts_per_request=xacts)
        for rps, xacts in ((100, 2.0), (400, None), (200, None))
    ]
    row = median_row(rows)
    assert (row["rps"], row["cpu_us_per_request"], row["db_xacts_per_request"]) == (
        200,
        5000,
        2.0,
    )
    assert [r["rps"] for r in row["rounds"]] == [100, 400, 200]
