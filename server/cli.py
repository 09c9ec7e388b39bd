"""The `order-service` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infra.logs import configure_logging
from infra.metrics import Metrics
from infra.settings import Settings, SettingsError, load_settings
from models.db import DATABASE_ERRORS
from models.migrate import upgrade_to_head
from models.rows import PaymentRow
from models.state import Role
from resolvers import accounts
from resolvers.context import RequestContext, Services
from resolvers.errors import DomainError

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except (SettingsError, ValueError) as exc:
        sys.exit(f"order-service: configuration error: {exc}")


def _with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    from server.app import build_services

    async def run() -> T:
        services = build_services(settings, Metrics())
        try:
            return await work(services)
        finally:
            await services.db.dispose()

    return asyncio.run(run())


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.workers > 1 and not settings.redis_url:
        sys.exit(
            "order-service: --workers > 1 needs REDIS_URL: without it each worker would have "
            "its own events, rate limits and cache."
        )
    asyncio.run(upgrade_to_head(settings.database_url))
    common = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_proxies,
        "ws_ping_interval": settings.ws_keepalive_seconds,
        # The sans-I/O implementation: a send costs less CPU, and it suspends only when
        # the peer reads too slowly, which the subscription feed relies on
        # (server/transport/live.py).
        "ws": "websockets-sansio",
        # Frames are a few hundred bytes of JSON; a deflate context per connection costs
        # tens of KB (the connection itself costs about 30) and CPU for every frame.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers > 1:
        uvicorn.run("server.asgi:app", workers=args.workers, **common)
    else:
        from server.app import create_app

        uvicorn.run(create_app(settings, freeze_heap=True), **common)


def cmd_migrate(_: argparse.Namespace) -> None:
    settings = _settings()
    asyncio.run(upgrade_to_head(settings.database_url))
    print("migrations applied")


def cmd_create_admin(args: argparse.Namespace) -> None:
    settings = _settings()
    asyncio.run(upgrade_to_head(settings.database_url))

    async def work(services: Services) -> str:
        ctx = RequestContext(services=services, request_id="cli")
        user = await accounts.promote_or_create_admin(ctx, args.email, args.password)
        return user.email

    try:
        email = _with_services(settings, work)
    except DomainError as exc:
        sys.exit(f"order-service: {exc.message}")
    print(f"{email} is an admin")


def cmd_set_role(args: argparse.Namespace) -> None:
    settings = _settings()
    asyncio.run(upgrade_to_head(settings.database_url))

    async def work(services: Services) -> str:
        ctx = RequestContext(services=services, request_id="cli")
        user = await accounts.set_role(ctx, args.email, Role(args.role))
        return user.email

    try:
        email = _with_services(settings, work)
    except DomainError as exc:
        sys.exit(f"order-service: {exc.message}")
    print(f"{email} is now {args.role}")


def cmd_seed_demo(_: argparse.Namespace) -> None:
    from server.demo import seed_demo

    settings = _settings()
    asyncio.run(upgrade_to_head(settings.database_url))
    # Seeding makes many orders at once: the per-user order limit does not apply to it.
    unlimited = settings.model_copy(update={"rate_limit_orders_per_minute": 0})
    logins = _with_services(unlimited, seed_demo)
    print("Demo data ready. Logins:")
    for email, password, role in logins:
        print(f"  {role:<5} {email:<20} {password}")


def cmd_export_schema(_: argparse.Namespace) -> None:
    from server.assembly import export_sdl

    sys.stdout.write(export_sdl())


def cmd_simulate_payment(args: argparse.Namespace) -> None:
    import httpx

    from resolvers import payments
    from webhooks.delivery import signed_delivery

    settings = _settings()
    raw_id = args.order_id.strip().removeprefix("#")
    if not raw_id.isdigit() or len(raw_id) > 18:
        sys.exit(f"order-service: {args.order_id!r} is not an order id")
    order_id = int(raw_id)
    if not settings.webhook_secrets:
        sys.exit("order-service: WEBHOOK_SECRET is empty: there is nothing to sign with")

    async def work(services: Services) -> PaymentRow | None:
        return await payments.latest_payment(services, order_id)

    try:
        payment = _with_services(settings, work)
    except DATABASE_ERRORS as exc:
        sys.exit(f"order-service: cannot read the payments in DATABASE_URL ({type(exc).__name__})")
    if payment is None:
        sys.exit(f"order-service: order {order_id} has no payment; start one with initiatePayment")
    status = {"success": "SUCCESS", "failed": "FAILED", "refunded": "REFUNDED"}[args.outcome]
    body, headers = signed_delivery(payment.id, order_id, status, settings.webhook_secrets[0])
    url = args.url.rstrip("/") + "/payments/webhook"
    print(f"POST {url} payment={payment.id} order={order_id} status={status}")
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        sys.exit(f"order-service: could not reach {url}: {type(exc).__name__}: {exc}")
    print(f"{response.status_code} {response.text}")
    if not response.is_success:
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="order-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (applies pending migrations first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=cmd_migrate)

    admin = sub.add_parser("create-admin", help="create an admin, or promote a user")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.set_defaults(func=cmd_create_admin)

    role = sub.add_parser(
        "set-role", help="change a user's role (every instance sees it on its next request)"
    )
    role.add_argument("--email", required=True)
    role.add_argument("--role", required=True, choices=[r.value for r in Role])
    role.set_defaults(func=cmd_set_role)

    sub.add_parser("seed-demo", help="demo catalog, users and orders").set_defaults(
        func=cmd_seed_demo
    )
    sub.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(
        func=cmd_export_schema
    )

    simulate = sub.add_parser(
        "simulate-payment",
        help="send a signed payment webhook for the order's latest payment",
    )
    # refunded: the provider gave the money back on its own (its dashboard, a dispute).
    simulate.add_argument("outcome", choices=["success", "failed", "refunded"])
    simulate.add_argument("order_id", metavar="ORDER_ID")
    simulate.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the service (default %(default)s)"
    )
    simulate.set_defaults(func=cmd_simulate_payment)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
