"""Use cases: accounts, catalog, orders, payments. They know nothing of GraphQL."""
