"""What a subscription field needs from the transport that delivers its events.

The schema does not import the transport (server/transport/ sits above it); the composition
root gives the schema a feed (server/assembly.py), and a subscription field asks for it
here. With no feed (FAST_PATHS=off, or an execution outside a websocket) the field streams
its events itself, as any Strawberry subscription does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from strawberry.types import Info

from resolvers.events import StatusEvent
from resolvers.subscriptions import Watch


class Seat(Protocol):
    """One subscriber's place in the feed: the feed writes its events from now on."""

    def deliver(self, event: StatusEvent) -> bool:
        """Write a live event now; False if the socket cannot take it without waiting."""
        ...

    async def send(self, event: StatusEvent) -> None:
        """Write a replayed event, waiting for the socket as long as it takes."""
        ...

    def leave(self) -> None: ...


class LiveFeed(Protocol):
    def join(self, info: Info, to_root: Callable[[Any], Any]) -> Seat | None:
        """A seat for the websocket operation being resolved, or None when this
        operation must stream its events itself."""
        ...

    def handoff(self, watched: Watch, seat: Seat) -> BaseException:
        """What the field raises once its checks passed, to hand the operation to the
        feed (a BaseException, so that Strawberry does not turn it into an error)."""
        ...


def live_feed(info: Info) -> LiveFeed | None:
    """The feed the schema was assembled with, if any."""
    feed: LiveFeed | None = getattr(info.schema, "live_feed", None)
    return feed
