"""Webhook attacks against a live server: malformed signatures, replays, reordering and
payloads naming another order. Whatever arrives, and in whatever order, the payment and
the order end in the one state the contract allows, with one event per status change."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pytest

from infra.security import sign_webhook
from tests.live import LiveServer
from tests.resilience.harness import PAY, WEBHOOK_SECRET, Api, log_mark, sql, unexpected_errors
from tests.resilience.ledger import Scenario
from tests.ws_client import ORDER_STATUS, TRANSPORT, WSClient

pytestmark = pytest.mark.timeout(120)

SECRET = WEBHOOK_SECRET.encode()
PATH = "/payments/webhook"
SEED = 20261125
STORM_ORDERS = 24


def _hex(body: bytes, key: bytes = SECRET, digest: str = "sha256") -> str:
    return hmac.new(key, body, getattr(hashlib, digest)).hexdigest()


# Each takes the body and returns the X-Signature value (None: no header at all).
BAD_SIGNATURES: dict[str, Callable[[bytes], str | None]] = {
    "missing": lambda b: None,
    "empty": lambda b: "",
    "prefix only": lambda b: "sha256=",
    "no prefix": lambda b: _hex(b),
    "prefix in capitals": lambda b: "SHA256=" + _hex(b),
    "sha1": lambda b: "sha1=" + _hex(b, digest="sha1"),
    "sha512 under the sha256 prefix": lambda b: "sha256=" + _hex(b, digest="sha512"),
    "sha512": lambda b: "sha512=" + _hex(b, digest="sha512"),
    "wrong secret": lambda b: "sha256=" + _hex(b, b"not-the-webhook-secret"),
    "empty secret": lambda b: "sha256=" + _hex(b, b""),
    "another body's": lambda b: "sha256=" + _hex(b + b" "),
    "truncated": lambda b: "sha256=" + _hex(b)[:-1],
    "one digit changed": lambda b: "sha256=" + _hex(b)[:-1] + ("0" if _hex(b)[-1] != "0" else "1"),
    "extra digit": lambda b: "sha256=" + _hex(b) + "0",
    "doubled": lambda b: "sha256=" + _hex(b) * 2,
    "base64 digest": lambda b: (
        "sha256=" + base64.b64encode(hmac.new(SECRET, b, hashlib.sha256).digest()).decode()
    ),
    "wrong then right, comma": lambda b: "sha256=" + "0" * 64 + ",sha256=" + _hex(b),
    "stripe style": lambda b: "t=1,v1=" + _hex(b),
    "space after the prefix": lambda b: "sha256= " + _hex(b),
    "zeros": lambda b: "sha256=" + "0" * 64,
    "not hex": lambda b: "sha256=" + "z" * 64,
    "8 KB": lambda b: "sha256=" + "a" * 8192,
    "the secret itself": lambda b: "sha256=" + WEBHOOK_SECRET,
}


@dataclass
class Paid:
    order_id: str
    payment_id: str
    owner: str


async def _order_with_payment(api: Api, token: str, client_token: str) -> Paid:
    order_id = (await api.create_order(token, client_token)).ok()["createOrder"]["id"]
    payment_id = (await api.gql(PAY, {"id": order_id}, token)).ok()["initiatePayment"]["id"]
    return Paid(order_id, payment_id, token)


def _body(payment_id: str, order_id: str | int, status: str) -> bytes:
    return orjson.dumps({"payment_id": payment_id, "order_id": order_id, "status": status})


async def _deliver(api: Api, body: bytes, signature: str | None) -> int:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-signature"] = signature
    return (await api.post(PATH, content=body, headers=headers)).status_code


async def _state(database_url: str, paid: Paid) -> tuple[str, int, str, bool]:
    rows = await sql(
        database_url,
        "SELECT o.status, o.version, p.status, p.needs_refund FROM orders o "
        "JOIN payments p ON p.order_id = o.id WHERE p.id = :pid",
        pid=paid.payment_id,
    )
    status, version, payment_status, refund = rows[0]
    return status, version, payment_status, bool(refund)


async def test_every_malformed_signature_changes_nothing(
    shared_server: tuple[LiveServer, str], scenario: Scenario
) -> None:
    """Webhook attacks: every malformed signature form is a 401 and changes nothing"""
    server, database_url = shared_server
    mark = log_mark(server)
    async with Api.open(server.url, scenario) as api:
        token, _ = await api.signup("webhook-signatures@example.com")
        paid = await _order_with_payment(api, token, "sig-1")
        wrong: list[str] = []
        for status in ("SUCCESS", "FAILED"):
            body = _body(paid.payment_id, paid.order_id, status)
            for name, make in BAD_SIGNATURES.items():
                scenario.tried()
                code = await _deliver(api, body, make(body))
                if code != 401:
                    wrong.append(f"{status} {name}: {code}")
        # The right signature on a reformatted body (same JSON, other bytes) is refused too.
        body = _body(paid.payment_id, paid.order_id, "SUCCESS")
        scenario.tried()
        code = await _deliver(api, body.replace(b",", b", "), sign_webhook(body, SECRET))
        if code != 401:
            wrong.append(f"reformatted body: {code}")
        assert await _state(database_url, paid) == ("PENDING", 1, "PENDING", False)
        inbox = await sql(
            database_url,
            "SELECT count(*) FROM webhook_inbox WHERE payment_id = :p",
            p=paid.payment_id,
        )
        assert inbox[0][0] == 0
        # Only the signature was wrong: signed, the same body goes through.
        assert await _deliver(api, body, sign_webhook(body, SECRET)) == 200
        assert await _state(database_url, paid) == ("PAID", 2, "SUCCEEDED", False)
    scenario.check("malformed signatures refused", 2 * len(BAD_SIGNATURES) + 1)
    assert not wrong, wrong
    assert not unexpected_errors(server, mark)


@dataclass
class Plan:
    """What one order gets in the storm, and the state the contract then allows."""

    paid: Paid
    cancelled_first: bool = False
    deliveries: list[tuple[str, bytes, str | None, int]] = field(default_factory=list)

    def expected(self) -> tuple[str, int, str, bool]:
        statuses = {kind for kind, _, _, code in self.deliveries if code == 200}
        succeeded = "SUCCESS" in statuses
        payment = "SUCCEEDED" if succeeded else "FAILED" if "FAILED" in statuses else "PENDING"
        if self.cancelled_first:
            return "CANCELLED", 2, payment, succeeded
        return ("PAID", 2, payment, False) if succeeded else ("PENDING", 1, payment, False)


def _plan(rng: random.Random, paid: Paid, victim: Paid, cancelled: bool) -> Plan:
    plan = Plan(paid, cancelled_first=cancelled)
    for _ in range(rng.randint(2, 8)):
        status = rng.choice(["SUCCESS", "FAILED"])
        body = _body(paid.payment_id, paid.order_id, status)
        plan.deliveries.append((status, body, sign_webhook(body, SECRET), 200))
        # A replay, sometimes with the order id as a number rather than a string.
        if rng.random() < 0.5:
            again = _body(paid.payment_id, int(paid.order_id), status)
            plan.deliveries.append((status, again, sign_webhook(again, SECRET), 200))
    # Correctly signed, naming another order, or a payment that does not exist: 404.
    other = _body(paid.payment_id, victim.order_id, "SUCCESS")
    plan.deliveries.append(("foreign", other, sign_webhook(other, SECRET), 404))
    unknown = _body("pay_" + "x" * 24, paid.order_id, "SUCCESS")
    plan.deliveries.append(("unknown", unknown, sign_webhook(unknown, SECRET), 404))
    forged = _body(paid.payment_id, paid.order_id, "SUCCESS")
    plan.deliveries.append(("forged", forged, "sha256=" + "0" * 64, 401))
    rng.shuffle(plan.deliveries)
    return plan


async def test_replays_reordering_and_foreign_orders_never_leave_a_wrong_state(
    shared_server: tuple[LiveServer, str], scenario: Scenario
) -> None:
    """Webhook attacks: a seeded storm of replays, reorderings and foreign order ids"""
    server, database_url = shared_server
    mark = log_mark(server)
    rng = random.Random(SEED)
    async with Api.open(server.url, scenario, connections=32) as api:
        owners = [(await api.signup(f"webhook-storm-{n}@example.com"))[0] for n in range(2)]
        admin, _ = await api.admin(database_url, "webhook-storm-admin@example.com")
        papers = [
            await _order_with_payment(api, owners[n % 2], f"storm-{n}") for n in range(STORM_ORDERS)
        ]
        # The brief's two orderings, each on orders of its own, sent one after the other.
        failed_after_success, success_after_cancel = papers[0], papers[1]
        plans = [
            _plan(rng, p, papers[(i + 1) % len(papers)], cancelled=i % 4 == 1)
            for i, p in enumerate(papers[2:], start=2)
        ]
        async with WSClient.connect(server.ws_url, admin, protocol=TRANSPORT) as ws:
            feed = await ws.subscribe(ORDER_STATUS)
            await _wait_subscribed(api)
            scenario.sent("websocket messages", 2)
            for plan in plans:
                if plan.cancelled_first:
                    (await api.move(admin, plan.paid.order_id, "CANCELLED", 1)).ok()

            # FAILED after SUCCESS: the order stays PAID, the payment SUCCEEDED.
            for status in ("SUCCESS", "FAILED", "SUCCESS", "FAILED"):
                body = _body(failed_after_success.payment_id, failed_after_success.order_id, status)
                assert await _deliver(api, body, sign_webhook(body, SECRET)) == 200
            # SUCCESS after CANCELLED: the order stays CANCELLED, a refund is flagged.
            (await api.move(admin, success_after_cancel.order_id, "CANCELLED", 1)).ok()
            body = _body(success_after_cancel.payment_id, success_after_cancel.order_id, "SUCCESS")
            for _ in range(3):
                assert await _deliver(api, body, sign_webhook(body, SECRET)) == 200

            # The storm: every other delivery at once, 16 in flight.
            deliveries = [(plan, d) for plan in plans for d in plan.deliveries]
            rng.shuffle(deliveries)
            gate = asyncio.Semaphore(16)

            async def send(plan: Plan, delivery: tuple[str, bytes, str | None, int]) -> str:
                kind, body, signature, expected = delivery
                async with gate:
                    code = await _deliver(api, body, signature)
                return "" if code == expected else f"order {plan.paid.order_id} {kind}: {code}"

            answers = await asyncio.gather(*(send(p, d) for p, d in deliveries))
            scenario.tried(len(deliveries) + 7)
            wrong = [a for a in answers if a]

            # The states the contract allows, whatever the order of arrival.
            states = {}
            for plan in plans:
                states[plan.paid.order_id] = await _state(database_url, plan.paid)
                if states[plan.paid.order_id] != plan.expected():
                    wrong.append(
                        f"order {plan.paid.order_id}: {states[plan.paid.order_id]}, "
                        f"expected {plan.expected()}"
                    )
            if await _state(database_url, failed_after_success) != ("PAID", 2, "SUCCEEDED", False):
                wrong.append(
                    f"FAILED after SUCCESS: {await _state(database_url, failed_after_success)}"
                )
            if await _state(database_url, success_after_cancel) != (
                "CANCELLED",
                2,
                "SUCCEEDED",
                True,
            ):
                wrong.append(
                    f"SUCCESS after CANCELLED: {await _state(database_url, success_after_cancel)}"
                )

            # One event per status change, each delivered once to the admin's feed.
            expected_events = {(p.order_id, 2) for p in papers[:2]} | {
                (plan.paid.order_id, 2) for plan in plans if plan.expected()[1] == 2
            }
            received: Counter[tuple[str, int]] = Counter()
            while sum(received.values()) < len(expected_events):
                try:
                    data = await ws.next_data(feed, timeout=10)
                except TimeoutError:
                    break
                event = data["orderStatusChanged"]
                received[(event["orderId"], event["version"])] += 1
            await ws.expect_nothing(feed, 1.0)
        outbox = await sql(
            database_url,
            "SELECT count(*) FROM outbox WHERE payload::json->>'order_id' = ANY(:ids) "
            "AND previous_status IS NOT NULL",
            ids=[p.order_id for p in papers],
        )
    missing = expected_events - set(received)
    scenario.check("deliveries answered as the contract says", len(deliveries) - len(wrong))
    scenario.check("orders in the state the contract allows", len(plans) + 2)
    scenario.check("status events delivered once", len(set(received) & expected_events))
    scenario.lose("status events", len(missing))
    scenario.note(
        f"{len(plans)} orders, {len(deliveries)} deliveries in random order (seed "
        f"{SEED}), 16 concurrent, replays with the id as string and number; "
        "FAILED after SUCCESS and SUCCESS after CANCELLED also sent in that order"
    )
    assert not wrong, "\n".join(wrong)
    assert not missing, f"events never delivered: {sorted(missing)}"
    assert set(received) == expected_events, f"unexpected events: {set(received) - expected_events}"
    assert all(n == 1 for n in received.values()), f"duplicates: {received}"
    assert outbox[0][0] == len(expected_events), "one outbox event per status change"
    assert not unexpected_errors(server, mark), unexpected_errors(server, mark)


async def _wait_subscribed(api: Api, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if (await api.http.get("/debug/runtime")).json()["subscribers"] >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the subscription was not registered")
