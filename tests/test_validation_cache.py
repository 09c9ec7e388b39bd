"""The parser and validation caches are hit: a repeated document is validated once."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry.schema.schema as strawberry_schema
from graphql import GraphQLError

import server.transport.cache as response_cache
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


@pytest.mark.fast_paths
@pytest.mark.parametrize(
    "document",
    [
        "query Page { orders { total } }",  # cacheable: described for the read cache
        "{ __typename }",
        "{ orders { total }",  # a syntax error
        "{ " + "a: __typename " * 1500 + "}",  # over the token limit, and 21 KB
    ],
    ids=["cacheable", "plain", "syntax-error", "over-token-limit"],
)
async def test_each_document_is_lexed_once(
    document: str, client_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view describes an operation (for the read cache and the operation's label)
    before the execution parses it: one parse serves both, and a text seen moments ago,
    parsed or failed, is not lexed again."""
    client = await client_factory(cache_ttl_seconds=30)
    parses: list[str] = []

    def counting(real: Any) -> Any:
        def parse(text: str, *args: Any, **kwargs: Any) -> Any:
            parses.append(text)
            return real(text, *args, **kwargs)

        return parse

    # Every parser the view and the execution could use.
    monkeypatch.setattr(documents, "parse", counting(documents.parse))
    monkeypatch.setattr(response_cache, "parse", counting(response_cache.parse))
    answers = [
        (await client.http.post("/graphql", json={"query": document})).json() for _ in range(2)
    ]
    assert len(parses) == 1
    assert answers[0] == answers[1]
    if document.startswith("{ a:"):
        assert answers[0]["errors"][0]["extensions"]["limit"] == "QUERY_MAX_TOKENS"
    elif document.startswith("{ orders"):
        assert answers[0]["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


@pytest.mark.fast_paths
async def test_documents_pushed_out_of_the_parse_cache_are_freed() -> None:
    """A stream of distinct documents (an attacker's, or a client that builds its text
    per request) cannot pile up parsed trees: the parse cache is bounded by the total
    length of its texts, and a document it drops is freed together with its validation
    and execution plans. Kept alive, they made each full garbage collection pause the
    whole process for over 100 ms (docs/reliability.md)."""
    import gc
    import weakref

    import server.transport.execution as execution

    schema = build_schema(load_settings(app_env="development"))
    policy = schema.document_policy
    assert policy is not None
    padding = "#" + "x" * 9_000 + "\n"  # a comment: long text, small tree
    texts = [f"{padding}query Q{i} {{ __typename a{i}: __typename }}" for i in range(120)]
    first = weakref.ref(policy.parse(texts[0]))
    memos_before = len(execution._memos)
    for text in texts:
        result = await schema.execute(text)
        assert result.errors is None and result.data is not None
    gc.collect()
    kept = documents.CACHED_TEXT // len(texts[0])
    assert len(policy._parsed) == kept  # bounded by weight, not by the 512 entries
    assert policy._parsed.weight <= documents.CACHED_TEXT
    assert first() is None  # pushed out, and freed
    assert len(policy._validated) <= kept + documents.RECENT_TEXTS
    assert len(execution._memos) - memos_before <= kept + documents.RECENT_TEXTS
    # What the cache keeps is still served from it: the same tree for the same text.
    assert policy.parse(texts[-1]) is policy.parse(texts[-1])


@pytest.mark.fast_paths
async def test_cached_errors_keep_no_frames() -> None:
    """What the caches keep for a bad document holds no traceback: a raised error's frames
    are the validation's (every rule, its visitors and context) and the request's, and
    kept they outlived the request by as long as the document (found in the live server:
    tens of thousands of graphql-core visitors in reach of every full collection)."""
    import gc

    schema = build_schema(load_settings(app_env="development"))
    policy = schema.document_policy
    assert policy is not None
    # A value its scalar refuses: graphql-core reports the error the scalar raised.
    bad_value = "{ orders(q: [1]) { total } }"
    for _ in range(2):
        result = await schema.execute(bad_value)
        assert result.errors and "String cannot represent" in result.errors[0].message
    document = policy.parse(bad_value)
    [errors] = policy._validated.of(document).values()
    chained = [e for error in errors for e in (error, error.original_error) if e is not None]
    assert chained and all(e.__traceback__ is None for e in chained)
    # A text that does not parse: each request gets an error of its own.
    raised = []
    for _ in range(2):
        with pytest.raises(GraphQLError) as caught:
            policy.parse("{ orders { total }")
        raised.append(caught.value)
    assert raised[0] is not raised[1] and raised[0].message == raised[1].message
    del caught, raised
    gc.collect()
    modules = (getattr(type(o), "__module__", None) for o in gc.get_objects())
    assert not [m for m in modules if isinstance(m, str) and m.startswith("graphql.validation.")]
