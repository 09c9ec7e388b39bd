"""Orders: creation, idempotency, reads, listing and status changes."""

from __future__ import annotations

from sqlalchemy import func, select

from models.tables import Order, OrderLine
from tests.client import GraphQLClient


async def _count(client: GraphQLClient, model: type) -> int:
    async with client.app.state.services.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_create_order_is_pending_at_version_1_with_copied_prices(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order = (
        await client.create_order(user_token, "t-1", [("WIDGET-001", 2), ("GADGET-002", 1)])
    ).ok()["createOrder"]
    assert order["status"] == "PENDING"
    assert order["version"] == 1
    assert order["clientToken"] == "t-1"
    assert order["amountCents"] == 3000
    assert order["items"] == [
        {"sku": "GADGET-002", "qty": 1, "unitPriceCents": 1000, "lineTotalCents": 1000},
        {"sku": "WIDGET-001", "qty": 2, "unitPriceCents": 1000, "lineTotalCents": 2000},
    ]
    assert order["user"]["email"] == "user@example.com"
    assert order["payment"] is None

    # A later price change does not touch an existing order.
    await client.execute(
        'mutation { upsertProduct(input: {sku: "WIDGET-001", name: "Widget", priceCents: 5}) '
        "{ sku } }",
        token=admin_token,
    )
    again = (
        await client.execute(
            "query($id: ID!) { order(id: $id) { amountCents items { unitPriceCents } } }",
            {"id": order["id"]},
            user_token,
        )
    ).ok()["order"]
    assert again["amountCents"] == 3000
    assert {i["unitPriceCents"] for i in again["items"]} == {1000}


async def test_a_repeat_returns_the_original_and_creates_nothing(
    client: GraphQLClient, user_token: str
) -> None:
    first = (await client.create_order(user_token, "same", [("WIDGET-001", 1)])).ok()
    # The same items in another order and spelling count as the same payload.
    second = (await client.create_order(user_token, "same", [("WIDGET-001", 1)])).ok()
    assert first["createOrder"]["id"] == second["createOrder"]["id"]
    assert await _count(client, Order) == 1
    assert await _count(client, OrderLine) == 1


async def test_the_same_token_with_other_items_is_refused(
    client: GraphQLClient, user_token: str
) -> None:
    (await client.create_order(user_token, "tok", [("WIDGET-001", 1)])).ok()
    result = await client.create_order(user_token, "tok", [("WIDGET-001", 2)])
    assert result.code == "IDEMPOTENCY_KEY_REUSED"
    assert await _count(client, Order) == 1


async def test_tokens_of_other_users_never_collide(client: GraphQLClient, user_token: str) -> None:
    other = await client.signup("other@example.com")
    a = (await client.create_order(user_token, "shared")).ok()["createOrder"]
    b = (await client.create_order(other, "shared", [("GADGET-002", 3)])).ok()["createOrder"]
    assert a["id"] != b["id"]
    assert b["user"]["email"] == "other@example.com"


BAD_ITEMS = [
    ([], "t", "items"),
    ([("WIDGET-001", 1)] * 2, "t", "items.1.sku"),
    ([("NOPE-999", 1)], "t", "items.0.sku"),
    ([("WIDGET-001", 0)], "t", "items.0.qty"),
    ([("WIDGET-001", 1001)], "t", "items.0.qty"),
    ([("WIDGET-001", 1)], "", "clientToken"),
    ([("WIDGET-001", 1)], "x" * 129, "clientToken"),
    ([("WIDGET-001", 1)], "no spaces", "clientToken"),
]


async def test_bad_input_names_the_field_and_writes_nothing(
    client: GraphQLClient, user_token: str
) -> None:
    for items, token, field in BAD_ITEMS:
        result = (
            await client.create_order(user_token, token, items)
            if items
            else (
                await client.execute(
                    "mutation($i: CreateOrderInput!) { createOrder(input: $i) { id } }",
                    {"i": {"items": [], "clientToken": token}},
                    user_token,
                )
            )
        )
        assert result.code == "BAD_USER_INPUT", (items, token)
        assert field in [e["field"] for e in result.ext["fieldErrors"]], result.ext
    too_many = [(f"SKU-{n}", 1) for n in range(51)]
    result = await client.create_order(user_token, "many", too_many)
    assert result.code == "BAD_USER_INPUT"
    assert await _count(client, Order) == 0
    assert await _count(client, OrderLine) == 0


async def test_limits_at_the_edges_are_accepted(client: GraphQLClient, user_token: str) -> None:
    (await client.create_order(user_token, "A-z0_9-.:" + "x" * 119, [("WIDGET-001", 1000)])).ok()


async def test_unknown_sku_in_a_valid_order_leaves_no_partial_rows(
    client: GraphQLClient, user_token: str
) -> None:
    result = await client.create_order(user_token, "p", [("WIDGET-001", 1), ("MISSING-1", 1)])
    assert result.code == "BAD_USER_INPUT"
    assert result.ext["fieldErrors"] == [
        {"field": "items.1.sku", "message": "unknown SKU MISSING-1"}
    ]
    assert await _count(client, Order) == 0


async def test_create_order_needs_a_login(client: GraphQLClient) -> None:
    assert (await client.create_order("", "t")).code == "UNAUTHENTICATED"


ORDER = "query($id: ID!) { order(id: $id) { id status user { email } } }"


async def test_order_is_visible_to_its_owner_and_admins_only(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order_id = (await client.create_order(user_token, "mine")).ok()["createOrder"]["id"]
    stranger = await client.signup("stranger@example.com")
    assert (await client.execute(ORDER, {"id": order_id}, user_token)).ok()["order"][
        "id"
    ] == order_id
    assert (await client.execute(ORDER, {"id": order_id}, admin_token)).ok()["order"][
        "id"
    ] == order_id
    denied = await client.execute(ORDER, {"id": order_id}, stranger)
    missing = await client.execute(ORDER, {"id": "999999"}, stranger)
    assert denied.code == missing.code == "NOT_FOUND"
    assert denied.errors[0]["message"] == missing.errors[0]["message"]
    assert (await client.execute(ORDER, {"id": "not-an-id"}, user_token)).code == "NOT_FOUND"


LIST = """
query($status: OrderStatus, $q: String, $page: Int!, $limit: Int!) {
  orders(status: $status, q: $q, page: $page, limit: $limit) {
    total page limit pages items { id status user { email } items { sku } }
  }
}
"""


async def _list(client: GraphQLClient, token: str, **args: object) -> dict:
    variables = {"status": None, "q": None, "page": 1, "limit": 10, **args}
    return (await client.execute(LIST, variables, token)).ok()["orders"]


async def test_orders_own_or_all_newest_first_with_pages(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    other = await client.signup("other@example.com")
    mine = [
        (await client.create_order(user_token, f"m{n}")).ok()["createOrder"]["id"] for n in range(5)
    ]
    theirs = (await client.create_order(other, "o1", [("GADGET-002", 1)])).ok()["createOrder"]["id"]

    own = await _list(client, user_token, limit=2)
    assert own["total"] == 5 and own["pages"] == 3 and own["page"] == 1 and own["limit"] == 2
    assert [o["id"] for o in own["items"]] == mine[::-1][:2]
    last = await _list(client, user_token, limit=2, page=3)
    assert [o["id"] for o in last["items"]] == [mine[0]]
    assert (await _list(client, user_token, page=9))["items"] == []

    everything = await _list(client, admin_token, limit=100)
    assert everything["total"] == 6
    assert everything["items"][0]["id"] == theirs


async def test_orders_filter_by_status_and_search(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    other = await client.signup("Findme@Example.com")
    a = (await client.create_order(user_token, "a", [("WIDGET-001", 1)])).ok()["createOrder"]
    b = (await client.create_order(other, "b", [("GADGET-002", 1)])).ok()["createOrder"]
    (await client.move(admin_token, a["id"], "CANCELLED", 1)).ok()

    assert [o["id"] for o in (await _list(client, admin_token, status="CANCELLED"))["items"]] == [
        a["id"]
    ]
    assert [o["id"] for o in (await _list(client, admin_token, q="gadget"))["items"]] == [b["id"]]
    assert [o["id"] for o in (await _list(client, admin_token, q=a["id"]))["items"]] == [a["id"]]
    assert [o["id"] for o in (await _list(client, admin_token, q="FINDME"))["items"]] == [b["id"]]
    # A user's q never matches by email, and never reaches other users' orders.
    assert (await _list(client, user_token, q="findme"))["items"] == []
    assert (await _list(client, user_token, q="gadget"))["items"] == []
    # LIKE wildcards are literal characters.
    assert (await _list(client, admin_token, q="%"))["items"] == []


async def test_orders_argument_bounds(client: GraphQLClient, user_token: str) -> None:
    for args, field in (
        ({"page": 0}, "page"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"q": "x" * 101}, "q"),
    ):
        variables = {"status": None, "q": None, "page": 1, "limit": 10, **args}
        result = await client.execute(LIST, variables, user_token)
        assert result.code == "BAD_USER_INPUT", args
        assert [e["field"] for e in result.ext["fieldErrors"]] == [field]
    assert (await _list(client, user_token, limit=100, q="x" * 100))["limit"] == 100


async def test_update_status_follows_the_transition_table(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order = (await client.create_order(user_token, "flow")).ok()["createOrder"]
    moved = (await client.move(admin_token, order["id"], "PAID", 1)).ok()["updateOrderStatus"]
    assert (moved["status"], moved["version"]) == ("PAID", 2)

    bad = await client.move(admin_token, order["id"], "DELIVERED", 2)
    assert bad.code == "INVALID_TRANSITION"
    assert sorted(bad.ext["allowed"]) == ["CANCELLED", "SHIPPED"]

    (await client.move(admin_token, order["id"], "SHIPPED", 2)).ok()
    done = (await client.move(admin_token, order["id"], "DELIVERED", 3)).ok()["updateOrderStatus"]
    assert (done["status"], done["version"]) == ("DELIVERED", 4)
    final = await client.move(admin_token, order["id"], "CANCELLED", 4)
    assert final.code == "INVALID_TRANSITION" and final.ext["allowed"] == []


async def test_update_status_with_a_stale_version_reports_the_current_one(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order = (await client.create_order(user_token, "stale")).ok()["createOrder"]
    (await client.move(admin_token, order["id"], "PAID", 1)).ok()
    stale = await client.move(admin_token, order["id"], "CANCELLED", 1)
    assert stale.code == "VERSION_CONFLICT"
    assert stale.ext["currentVersion"] == 2


async def test_update_status_is_for_admins(client: GraphQLClient, user_token: str) -> None:
    order = (await client.create_order(user_token, "own")).ok()["createOrder"]
    assert (await client.move(user_token, order["id"], "CANCELLED", 1)).code == "FORBIDDEN"
    assert (await client.move("", order["id"], "CANCELLED", 1)).code == "UNAUTHENTICATED"


async def test_update_status_of_a_missing_order(client: GraphQLClient, admin_token: str) -> None:
    assert (await client.move(admin_token, "424242", "PAID", 1)).code == "NOT_FOUND"


async def test_upsert_product_is_for_admins_and_validates(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    upsert = "mutation($i: ProductInput!) { upsertProduct(input: $i) { sku name priceCents } }"
    good = {"sku": "NEW-1", "name": "New thing", "priceCents": 250}
    assert (await client.execute(upsert, {"i": good}, user_token)).code == "FORBIDDEN"
    assert (await client.execute(upsert, {"i": good}, admin_token)).ok()["upsertProduct"] == good
    renamed = {**good, "name": "Renamed", "priceCents": 300}
    assert (await client.execute(upsert, {"i": renamed}, admin_token)).ok()[
        "upsertProduct"
    ] == renamed
    bad = await client.execute(
        upsert, {"i": {"sku": "bad sku", "name": "", "priceCents": -1}}, admin_token
    )
    assert bad.code == "BAD_USER_INPUT"
    assert {e["field"] for e in bad.ext["fieldErrors"]} == {"sku", "name", "priceCents"}
    products = (await client.execute("{ products { sku } }")).ok()["products"]
    assert [p["sku"] for p in products] == ["GADGET-002", "NEW-1", "WIDGET-001"]
