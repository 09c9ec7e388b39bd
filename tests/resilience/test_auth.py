"""Auth attacks and access probes against a live server.

Forged, expired, premature and incomplete tokens are no token at all: UNAUTHENTICATED on
HTTP and a refused websocket (4403). Tokens are HS256 only; a token whose `iat` or `nbf`
is in the future is refused like an expired one (PyJWT's rule, with no leeway: instances
sign and check with clocks kept in step by NTP). The role that counts is the database's:
a token that says ADMIN for a USER gets FORBIDDEN, a demoted admin's token too. Another
user's order is NOT_FOUND, exactly like an order that does not exist, on every field that
takes an order id and on the subscription; updateOrderStatus is FORBIDDEN to every USER,
whatever the order, so it tells nothing either.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.live import LiveServer
from tests.resilience.harness import (
    ORDER,
    PAY,
    SECRET_KEY,
    Api,
    log_mark,
    run_sync,
    sql,
    unexpected_errors,
)
from tests.resilience.ledger import Scenario
from tests.ws_client import ORDER_STATUS, TRANSPORT, Refused, WSClient

pytestmark = pytest.mark.timeout(120)

ME = "{ me { id email role } }"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), signature]
    )


def _claims(user_id: int, role: str = "USER", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user_id), "role": role, "iat": now, "exp": now + 600}
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hmac_with_any_key(
    claims: dict[str, Any], key: bytes, alg: str = "HS256", headers: dict[str, str] | None = None
) -> str:
    """HMAC-sign with bytes PyJWT would refuse as a key (a PEM): the confusion attack."""
    header = {"alg": alg, "typ": "JWT", **(headers or {})}
    signing_input = ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode())])
    digest = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(digest)


def _tamper_role(token: str, role: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = role
    return ".".join([header, _b64(json.dumps(claims).encode()), signature])


def _quietly(encode: Any, *args: Any, **kwargs: Any) -> str:
    # PyJWT warns that the key is short for SHA-384/512: it is not meant to verify anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(encode(*args, **kwargs))


def forged_tokens(user_id: int, real_token: str) -> dict[str, str]:
    """Every token here must count as no token at all."""
    key = SECRET_KEY
    rsa_key = _rsa_key()
    pem = _public_pem(rsa_key)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    good = _claims(user_id)
    tokens = {
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, good),
        "alg None": _unsigned({"alg": "None", "typ": "JWT"}, good),
        "alg NONE with the real signature": _unsigned(
            {"alg": "NONE"}, good, real_token.split(".")[2]
        ),
        "no alg": _unsigned({"typ": "JWT"}, good, real_token.split(".")[2]),
        "signature stripped": real_token.rsplit(".", 1)[0] + ".",
        "signature of another token": ".".join(
            [*real_token.split(".")[:2], jwt.encode(_claims(user_id + 1), key, "HS256")[-43:]]
        ),
        "wrong key": jwt.encode(good, "not-the-secret-key-0123456789abcdef", algorithm="HS256"),
        "empty key": _hmac_with_any_key(good, b""),
        "HS384 with the right key": _quietly(jwt.encode, good, key, algorithm="HS384"),
        "HS512 with the right key": _quietly(jwt.encode, good, key, algorithm="HS512"),
        "RS256 with a stranger's key": jwt.encode(good, rsa_key, algorithm="RS256"),
        "ES256 with a stranger's key": jwt.encode(good, ec_key, algorithm="ES256"),
        "RS256 header, HMAC with the public key": _hmac_with_any_key(good, pem, alg="RS256"),
        "HS256, HMAC with a public key PEM": _hmac_with_any_key(good, pem),
        "expired": jwt.encode(_claims(user_id, iat=now - 7200, exp=now - 3600), key, "HS256"),
        "expired a second ago": jwt.encode(_claims(user_id, exp=now - 1), key, "HS256"),
        "not yet valid (nbf in an hour)": jwt.encode(
            _claims(user_id, nbf=now + 3600), key, "HS256"
        ),
        "issued in the future (iat in an hour)": jwt.encode(
            _claims(user_id, iat=now + 3600, exp=now + 7200), key, "HS256"
        ),
        "no sub": jwt.encode(_claims(user_id, sub=None), key, "HS256"),
        "no role": jwt.encode(_claims(user_id, role=None), key, "HS256"),
        "no iat": jwt.encode(_claims(user_id, iat=None), key, "HS256"),
        "no exp": jwt.encode(_claims(user_id, exp=None), key, "HS256"),
        "sub not a number": jwt.encode(_claims(user_id, sub="abc"), key, "HS256"),
        "sub a number, not a string": jwt.encode(_claims(user_id, sub=user_id), key, "HS256"),
        "sub of no user": jwt.encode(_claims(987654), key, "HS256"),
        "sub past 32 bits": jwt.encode(_claims(user_id, sub="99999999999"), key, "HS256"),
        "sub negative": jwt.encode(_claims(user_id, sub="-1"), key, "HS256"),
        "sub with a plus sign": jwt.encode(_claims(user_id, sub=f"+{user_id}"), key, "HS256"),
        "sub with an underscore": jwt.encode(_claims(user_id, sub=f"0_{user_id}"), key, "HS256"),
        "role tampered to ADMIN": _tamper_role(real_token, "ADMIN"),
        "payload not JSON": ".".join(
            [real_token.split(".")[0], _b64(b"not json"), real_token.split(".")[2]]
        ),
        "garbage": "a.b.c",
        "two parts": "a.b",
        "empty": "",
        "kid pointing at an empty file": _hmac_with_any_key(
            good, b"", headers={"kid": "../../../../dev/null"}
        ),
        "jku to a stranger's keys": jwt.encode(
            good, rsa_key, algorithm="RS256", headers={"jku": "http://127.0.0.1:9/keys"}
        ),
    }
    return tokens


@dataclass
class World:
    server: LiveServer
    database_url: str
    alice: str
    alice_id: int
    bob: str
    bob_id: int
    admin: str
    alice_orders: list[str]
    bob_orders: list[str]


@pytest.fixture(scope="module")
def world(shared_server: tuple[LiveServer, str]) -> World:
    return run_sync(lambda: _make_world(*shared_server))


async def _make_world(server: LiveServer, database_url: str) -> World:
    async with Api.open(server.url, None) as api:
        alice, alice_id = await api.signup("auth-alice@example.com")
        bob, bob_id = await api.signup("auth-bob@example.com")
        admin, _ = await api.admin(database_url, "auth-admin@example.com")
        alice_orders = [
            (await api.create_order(alice, f"alice-{n}")).ok()["createOrder"]["id"]
            for n in range(3)
        ]
        bob_orders = [(await api.create_order(bob, "bob-0")).ok()["createOrder"]["id"]]
        # One of Alice's orders has a pending payment, one is paid.
        (await api.gql(PAY, {"id": alice_orders[0]}, alice)).ok()
        (await api.move(admin, alice_orders[1], "PAID", 1)).ok()
    return World(
        server, database_url, alice, alice_id, bob, bob_id, admin, alice_orders, bob_orders
    )


async def _expect_refused_everywhere(
    api: Api, world: World, token: str, scenario: Scenario
) -> list[str]:
    """What a forged token got that it should not have (empty: refused everywhere)."""
    wrong: list[str] = []
    probes: list[tuple[str, str, dict[str, Any]]] = [
        ("me", ME, {}),
        ("order", ORDER, {"id": world.alice_orders[0]}),
        ("orders", "{ orders { total } }", {}),
        (
            "createOrder",
            'mutation { createOrder(input: {clientToken: "forged", '
            'items: [{sku: "WIDGET-001", qty: 1}]}) { id } }',
            {},
        ),
        ("initiatePayment", PAY, {"id": world.alice_orders[2]}),
        (
            "updateOrderStatus",
            "mutation($id: ID!) { updateOrderStatus(input: {id: $id, "
            "status: CANCELLED, version: 1}) { id } }",
            {"id": world.alice_orders[2]},
        ),
    ]
    for name, query, variables in probes:
        r = await api.gql(query, variables, token)
        if r.status != 200 or r.codes != ["UNAUTHENTICATED"] or any((r.data or {}).values()):
            wrong.append(f"{name}: {r.status} {r.body}")
    scenario.sent("websocket connections")
    try:
        ws = await WSClient.connect(world.server.ws_url, token, protocol=TRANSPORT, timeout=5)
    except Refused as refused:
        if refused.code != 4403:
            wrong.append(f"websocket refused with {refused.code}, not 4403")
    else:
        await ws.close()
        wrong.append("websocket accepted")
    return wrong


async def test_forged_tokens_are_no_token(world: World, scenario: Scenario) -> None:
    """Auth attacks: forged, expired, premature and incomplete tokens are UNAUTHENTICATED"""
    mark = log_mark(world.server)
    tokens = forged_tokens(world.alice_id, world.alice)
    failures: list[str] = []
    async with Api.open(world.server.url, scenario) as api:
        # The real token works: the probes below would notice a server that refuses all.
        assert (await api.gql(ME, {}, world.alice)).ok()["me"]["id"] == str(world.alice_id)
        for name, token in tokens.items():
            scenario.tried()
            failures += [
                f"{name}: {w}"
                for w in await _expect_refused_everywhere(api, world, token, scenario)
            ]
        # Schemes and placements that are not `Bearer <token>` in the header.
        for header in (
            f"Basic {world.alice}",
            f"Token {world.alice}",
            world.alice,
            f"Bearer{world.alice}",
            f"Bearer {world.alice} {world.alice}",
        ):
            scenario.tried()
            r = await api.post("/graphql", json={"query": ME}, headers={"authorization": header})
            if r.json().get("data") or "UNAUTHENTICATED" not in r.text:
                failures.append(f"authorization {header[:12]}...: {r.text[:200]}")
        r = await api.post(f"/graphql?access_token={world.alice}", json={"query": ME})
        if "UNAUTHENTICATED" not in r.text:
            failures.append(f"token in the URL: {r.text[:200]}")
    # Nothing a forged token sent was written.
    rows = await sql(
        world.database_url, "SELECT count(*) FROM orders WHERE client_token = 'forged'"
    )
    scenario.check("forged tokens refused on 6 operations and the websocket", len(tokens))
    scenario.note(
        "future iat/nbf: refused (PyJWT, no leeway); sub must be a string of a user that exists"
    )
    assert rows[0][0] == 0, "an order was created with a forged token"
    assert not failures, "\n".join(failures)
    assert not unexpected_errors(world.server, mark), unexpected_errors(world.server, mark)


async def test_the_database_role_counts_not_the_token(world: World, scenario: Scenario) -> None:
    """Auth attacks: a token saying ADMIN for a USER, a demoted admin, a deleted user"""
    now = int(time.time())
    says_admin = jwt.encode(
        {"sub": str(world.bob_id), "role": "ADMIN", "iat": now, "exp": now + 600},
        SECRET_KEY,
        "HS256",
    )
    async with Api.open(world.server.url, scenario) as api:
        scenario.tried()
        r = await api.move(says_admin, world.alice_orders[2], "CANCELLED", 1)
        assert r.codes == ["FORBIDDEN"], r.body
        r = await api.gql(ORDER, {"id": world.alice_orders[2]}, says_admin)
        assert r.codes == ["NOT_FOUND"] and r.data == {"order": None}, r.body
        r = await api.gql("{ orders(limit: 100) { total items { id } } }", {}, says_admin)
        assert {o["id"] for o in r.ok()["orders"]["items"]} == set(world.bob_orders)

        # A demoted admin loses admin rights at once on HTTP, whatever the token says.
        demoted, demoted_id = await api.admin(world.database_url, "auth-demoted@example.com")
        assert (await api.gql("{ orders { total } }", {}, demoted)).ok()["orders"]["total"] > 1
        await sql(
            world.database_url, "UPDATE users SET role = 'USER' WHERE id = :id", id=demoted_id
        )
        scenario.tried()
        r = await api.move(demoted, world.alice_orders[2], "CANCELLED", 1)
        assert r.codes == ["FORBIDDEN"], r.body
        r = await api.gql(ORDER, {"id": world.alice_orders[2]}, demoted)
        assert r.codes == ["NOT_FOUND"], r.body

        # A deleted user's token is no token.
        gone, gone_id = await api.signup("auth-gone@example.com")
        (await api.create_order(gone, "gone-1")).ok()
        await sql(world.database_url, "DELETE FROM users WHERE id = :id", id=gone_id)
        scenario.tried()
        wrong = await _expect_refused_everywhere(api, world, gone, scenario)
        assert not wrong, wrong
    scenario.check("role and existence read from the database", 3)
    state = await sql(
        world.database_url,
        "SELECT status, version FROM orders WHERE id = :id",
        id=int(world.alice_orders[2]),
    )
    assert tuple(state[0]) == ("PENDING", 1)


async def test_other_users_orders_are_not_found(world: World, scenario: Scenario) -> None:
    """Access probes: every order and payment field, and the subscription, as another user"""
    async with Api.open(world.server.url, scenario) as api:
        missing = await api.gql(ORDER, {"id": "999999"}, world.bob)
        assert missing.codes == ["NOT_FOUND"]
        probes = 0
        for order_id in world.alice_orders:
            probes += 10
            r = await api.gql(ORDER, {"id": order_id}, world.bob)
            # Exactly the answer for an order that does not exist: no oracle.
            assert r.data == {"order": None} and r.codes == ["NOT_FOUND"], r.body
            assert r.errors[0]["message"] == missing.errors[0]["message"]
            for q in (order_id, f"#{order_id}", "WIDGET", "auth-alice", ""):
                r = await api.gql(
                    "query($q: String) { orders(q: $q, limit: 100) "
                    "{ total items { id user { email } } } }",
                    {"q": q},
                    world.bob,
                )
                page = r.ok()["orders"]
                assert {o["id"] for o in page["items"]} <= set(world.bob_orders), (q, page)
            r = await api.gql(PAY, {"id": order_id}, world.bob)
            assert r.codes == ["NOT_FOUND"] and not r.data, r.body
            # updateOrderStatus is for admins: FORBIDDEN for Bob whatever the order.
            for target in (order_id, world.bob_orders[0], "999999"):
                r = await api.move(world.bob, target, "CANCELLED", 1)
                assert r.codes == ["FORBIDDEN"], r.body
        # Bob reusing Alice's client token gets an order of his own.
        r = await api.create_order(world.bob, "alice-0")
        assert r.ok()["createOrder"]["id"] not in world.alice_orders
        bob_extra = r.ok()["createOrder"]["id"]

        # The subscription: NOT_FOUND for Alice's orders; Bob's feed shows only his own.
        async with WSClient.connect(world.server.ws_url, world.bob, protocol=TRANSPORT) as ws:
            for order_id in [*world.alice_orders, "999999"]:
                probes += 1
                scenario.sent("websocket messages")
                op = await ws.subscribe(ORDER_STATUS, {"orderId": order_id})
                message = await ws.receive(op)
                errors = (
                    message.payload
                    if message.type == "error"
                    else (message.payload or {}).get("errors")
                )
                assert errors and errors[0]["extensions"]["code"] == "NOT_FOUND", message
            feed = await ws.subscribe(ORDER_STATUS)
            scenario.sent("websocket messages", 2)
            await _wait_subscribers(api, 1)
            (await api.move(world.admin, world.alice_orders[2], "CANCELLED", 1)).ok()
            (await api.move(world.admin, bob_extra, "CANCELLED", 1)).ok()
            event = await ws.next_data(feed, timeout=10)
            assert event["orderStatusChanged"]["orderId"] == bob_extra, event
            await ws.expect_nothing(feed, 1.0)
        scenario.tried(probes)
    payments = await sql(
        world.database_url,
        "SELECT count(*) FROM payments WHERE order_id = ANY(:ids)",
        ids=[int(i) for i in world.alice_orders],
    )
    assert payments[0][0] == 1, "Bob started a payment for Alice's order"
    scenario.check("probes of another user's orders answered NOT_FOUND, FORBIDDEN or empty", probes)
    scenario.note(
        "probed: order, orders (id, #id, SKU, email, empty), initiatePayment, "
        "updateOrderStatus, createOrder's clientToken, orderStatusChanged"
    )


async def _wait_subscribers(api: Api, at_least: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await api.http.get("/debug/runtime")
        if r.json()["subscribers"] >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the subscription was not registered in time")
