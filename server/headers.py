"""Security headers of the pages a browser shows: the admin (/admin), GraphiQL (GET /graphql
and its assets under /graphiql) and the payment simulator (/payments/simulator).

One strict Content-Security-Policy for all of them: scripts, styles, fonts, workers and
connections from this origin only, no inline script, nothing may frame the page. The admin's
and GraphiQL's Vite builds load everything from files of their own (the e2e tests check that
the browser reports no violation). Styles allow 'unsafe-inline' because GraphiQL's editor
(Monaco) writes its theme into <style> elements at run time; no script runs from them.

API answers (POST /graphql, webhooks, health, metrics) are not pages and are passed through
untouched: no work per request there.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)

PAGE_PREFIXES = ("/admin", "/graphiql", "/payments/simulator/")


def is_page(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    if path == "/graphql":
        return scope.get("method") == "GET"  # GraphiQL's HTML; POST is the API
    return path.startswith(PAGE_PREFIXES)


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to the answers of page paths (see is_page), keeping any of them
    a route set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http" or not is_page(scope):
            return self.app(scope, receive, send)
        return self._page(scope, receive, send)

    async def _page(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                present = {name.lower() for name, _ in headers} & _NAMES
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
