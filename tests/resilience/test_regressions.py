"""Regression tests for the bugs the resilience suite found. Unlike the rest of the suite
they need no live server and run on both backends (the int32 ones fail only on PostgreSQL,
whose integer columns refuse what SQLite stores)."""

from __future__ import annotations

import pytest

from tests.client import GraphQLClient

ORDER = "query($id: ID!) { order(id: $id) { id } }"
ORDERS = "query($q: String) { orders(q: $q) { total items { id } } }"
PAY = "mutation($id: ID!) { initiatePayment(input: {orderId: $id}) { id } }"
UPSERT = "mutation($i: ProductInput!) { upsertProduct(input: $i) { sku priceCents } }"

# Found by fuzzing: a number past the 32-bit id column made PostgreSQL fail the query
# (INTERNAL_SERVER_ERROR); digits that are not ASCII ("²") made int() fail.
NOT_IDS = ["2147483648", "23434555220", "999999999999999999", "²", "١٢٣", "1\n", "+1", "1_0"]


@pytest.mark.parametrize("raw", NOT_IDS)
async def test_an_id_out_of_range_or_not_ascii_is_not_found(
    client: GraphQLClient, user_token: str, admin_token: str, raw: str
) -> None:
    r = await client.execute(ORDER, {"id": raw}, user_token)
    assert r.code == "NOT_FOUND", r.body
    r = await client.execute(PAY, {"id": raw}, user_token)
    assert r.code == "NOT_FOUND", r.body
    r = await client.move(admin_token, raw, "PAID", 1)
    assert r.code == "NOT_FOUND", r.body


@pytest.mark.parametrize("q", [*NOT_IDS, "#2147483648", "#²"])
async def test_searching_for_a_number_that_is_no_id_finds_nothing(
    client: GraphQLClient, user_token: str, q: str
) -> None:
    r = await client.execute(ORDERS, {"q": q}, user_token)
    assert r.ok()["orders"]["total"] == 0


async def test_the_largest_id_is_simply_not_found(client: GraphQLClient, user_token: str) -> None:
    r = await client.execute(ORDER, {"id": str(2**31 - 1)}, user_token)
    assert r.code == "NOT_FOUND", r.body


async def test_an_order_whose_total_overflows_the_amount_column_is_refused(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    # Found by reading what fuzzing reached: prices up to 10^8 cents times 1000 items
    # overflowed the 32-bit amount column on PostgreSQL (INTERNAL_SERVER_ERROR).
    r = await client.execute(
        UPSERT, {"i": {"sku": "YACHT-1", "name": "Yacht", "priceCents": 100_000_000}}, admin_token
    )
    r.ok()
    r = await client.create_order(user_token, "big-1", [("YACHT-1", 1000)])
    assert r.code == "BAD_USER_INPUT", r.body
    assert [e["field"] for e in r.ext["fieldErrors"]] == ["items"]
    # The largest order that fits is still taken.
    r = await client.create_order(user_token, "big-2", [("YACHT-1", 21)])
    assert r.ok()["createOrder"]["amountCents"] == 2_100_000_000
