"""`uvicorn bench.baseline_app:app` with the options `order-service serve` uses.

    python -m bench.serve --port 8000 [--workers N]
    python -m bench.serve --port 8001 --app bench.reference_app:app --bare

Migrations are the harness's job (it creates the database); everything else about the
server (proxy headers, websocket pings, graceful shutdown, logging) is as in production.
`--bare` serves a reference app as a stock deployment would: uvicorn's defaults, no
access log.
"""

from __future__ import annotations

import argparse

import uvicorn

from infra.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--app", default="bench.baseline_app:app")
    parser.add_argument("--bare", action="store_true", help="uvicorn's defaults, no access log")
    args = parser.parse_args()
    if args.bare:
        uvicorn.run(args.app, host=args.host, port=args.port, workers=args.workers,
                    log_level="warning", access_log=False)  # fmt: skip
        return
    settings = load_settings()
    uvicorn.run(
        args.app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        ws_ping_interval=settings.ws_keepalive_seconds,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
