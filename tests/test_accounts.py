"""Signup, login and who-am-I, as a client sees them."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from sqlalchemy import delete, update

from infra.settings import Settings
from models.tables import User
from tests.client import PASSWORD, GraphQLClient

SIGNUP = "mutation($i: SignupInput!) { signup(input: $i) { accessToken tokenType role user { id email role createdAt } } }"


async def test_signup_returns_an_hs256_token_with_the_contract_claims(
    client: GraphQLClient, settings: Settings
) -> None:
    result = await client.execute(SIGNUP, {"i": {"email": "New@Example.COM", "password": PASSWORD}})
    payload = result.ok()["signup"]
    assert payload["tokenType"] == "Bearer"
    assert payload["role"] == "USER"
    assert payload["user"]["email"] == "new@example.com"
    token = payload["accessToken"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, settings.secret_key.get_secret_value(), algorithms=["HS256"])
    assert claims["sub"] == payload["user"]["id"]
    assert claims["role"] == "USER"
    assert claims["exp"] - claims["iat"] == settings.jwt_expires_minutes * 60


async def test_email_taken_is_case_insensitive(client: GraphQLClient) -> None:
    await client.signup("dup@example.com")
    result = await client.execute(SIGNUP, {"i": {"email": "DUP@example.com", "password": PASSWORD}})
    assert result.code == "EMAIL_TAKEN"


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("not-an-email", PASSWORD, "email"),
        ("a@example.com", "short", "password"),
        ("a@example.com", "x" * 73, "password"),
        ("a@example.com", "é" * 37, "password"),  # 74 bytes in UTF-8
    ],
)
async def test_signup_validation_names_the_field(
    client: GraphQLClient, email: str, password: str, field: str
) -> None:
    result = await client.execute(SIGNUP, {"i": {"email": email, "password": password}})
    assert result.code == "BAD_USER_INPUT"
    assert [e["field"] for e in result.ext["fieldErrors"]] == [field]


async def test_password_of_exactly_8_and_72_bytes_is_accepted(client: GraphQLClient) -> None:
    await client.signup("eight@example.com", "x" * 8)
    await client.signup("seventytwo@example.com", "y" * 72)


async def test_login_and_me(client: GraphQLClient) -> None:
    await client.signup("me@example.com")
    login = (await client.login("ME@example.com")).ok()["login"]
    assert login["user"]["email"] == "me@example.com"
    me = (await client.execute("{ me { email role } }", token=login["accessToken"])).ok()
    assert me["me"] == {"email": "me@example.com", "role": "USER"}


async def test_wrong_password_and_unknown_email_look_the_same(client: GraphQLClient) -> None:
    await client.signup("known@example.com")
    wrong = await client.login("known@example.com", "not-the-password")
    unknown = await client.login("nobody@example.com", "not-the-password")
    assert wrong.code == unknown.code == "INVALID_CREDENTIALS"
    assert wrong.errors[0]["message"] == unknown.errors[0]["message"]


async def test_a_password_longer_than_bcrypt_reads_is_just_wrong(client: GraphQLClient) -> None:
    """bcrypt 5 refuses more than 72 bytes (a ValueError, once a 500); no stored password is
    that long, and one that starts with a real password's 72 bytes does not match it."""
    await client.signup("long@example.com", "z" * 72)
    for password in ("x" * 130, "z" * 73, "é" * 40):
        for email in ("long@example.com", "nobody@example.com"):
            result = await client.login(email, password)
            assert result.code == "INVALID_CREDENTIALS", (email, len(password))
    assert (await client.login("long@example.com", "z" * 72)).ok()


async def test_me_without_a_token_is_unauthenticated(client: GraphQLClient) -> None:
    assert (await client.execute("{ me { email } }")).code == "UNAUTHENTICATED"


def _forge(claims: dict[str, object], key: str, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


async def test_only_valid_hs256_tokens_count(client: GraphQLClient, settings: Settings) -> None:
    token = await client.signup("victim@example.com")
    claims = jwt.decode(token, options={"verify_signature": False})
    key = settings.secret_key.get_secret_value()
    now = int(time.time())
    payload = token.split(".")[1]
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    bad_tokens = {
        "alg none": f"{none_header.decode()}.{payload}.",
        "wrong key": _forge(claims, "another-key-that-is-long-enough-000"),
        "HS512": _forge(claims, key, "HS512"),
        "expired": _forge({**claims, "iat": now - 7200, "exp": now - 3600}, key),
        "no exp": _forge({k: v for k, v in claims.items() if k != "exp"}, key),
        "no sub": _forge({k: v for k, v in claims.items() if k != "sub"}, key),
        "garbage": "not.a.token",
    }
    for name, bad in bad_tokens.items():
        result = await client.execute("{ me { email } }", token=bad)
        assert result.code == "UNAUTHENTICATED", name


async def test_the_role_in_the_database_counts_not_the_token(
    client: GraphQLClient, settings: Settings
) -> None:
    token = await client.signup("climber@example.com")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = _forge({**claims, "role": "ADMIN"}, settings.secret_key.get_secret_value())
    result = await client.execute(
        'mutation { upsertProduct(input: {sku: "X-1", name: "X", priceCents: 1}) { sku } }',
        token=forged,
    )
    assert result.code == "FORBIDDEN"


async def test_a_demoted_admin_loses_admin_rights(client: GraphQLClient) -> None:
    token = await client.make_admin("boss@example.com")
    upsert = 'mutation { upsertProduct(input: {sku: "X-2", name: "X", priceCents: 5}) { sku } }'
    assert (await client.execute(upsert, token=token)).ok()
    async with client.app.state.services.db.transaction() as session:
        await session.execute(
            update(User).where(User.email == "boss@example.com").values(role="USER")
        )
    assert (await client.execute(upsert, token=token)).code == "FORBIDDEN"


async def test_a_deleted_users_token_is_unauthenticated(client: GraphQLClient) -> None:
    token = await client.signup("gone@example.com")
    async with client.app.state.services.db.transaction() as session:
        await session.execute(delete(User).where(User.email == "gone@example.com"))
    assert (await client.execute("{ me { email } }", token=token)).code == "UNAUTHENTICATED"
