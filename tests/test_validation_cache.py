"""The parser and validation caches are hit: a repeated document is validated once."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema

import server.transport.documents as documents
from infra.settings import load_settings
from server.assembly import build_schema


@pytest.mark.parametrize("app_env", ["development", "production"])
async def test_a_repeated_document_is_validated_once(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        app_env=app_env,
        secret_key="s" * 32,
        webhook_secret="w" * 32,
        payment_provider_url="https://payments.example.com",
    )
    schema = build_schema(settings)
    # The fast path validates in server/transport/documents.py; FAST_PATHS=off, in Strawberry's
    # validate_document behind its ValidationCache. Count graphql-core's validate there.
    module: Any = documents if settings.fast_paths else strawberry_schema
    validations: list[Any] = []
    real_validate = module.validate

    def counting_validate(*args: Any, **kwargs: Any) -> Any:
        validations.append(args)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(module, "validate", counting_validate)
    for _ in range(3):
        result = await schema.execute("{ __typename }")
        assert result.errors is None and result.data == {"__typename": "Query"}
    assert len(validations) == 1


async def test_the_limits_still_apply_to_cached_documents() -> None:
    schema = build_schema(load_settings(query_max_depth=3, query_max_aliases=2))
    deep = "{ orders { items { user { id } } } }"
    aliased = "{ a: __typename b: __typename c: __typename }"
    for _ in range(2):
        for document in (deep, aliased):
            result = await schema.execute(document)
            assert result.errors, document
