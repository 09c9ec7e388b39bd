from tests.client import GraphQLClient


async def test_products_on_a_fresh_database(client: GraphQLClient) -> None:
    data = (await client.execute("{ products { sku priceCents } }")).ok()
    assert {"sku": "WIDGET-001", "priceCents": 1000} in data["products"]
    assert {"sku": "GADGET-002", "priceCents": 1000} in data["products"]
