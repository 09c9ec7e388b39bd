"""Subscription events written to websockets straight from the status feed.

Strawberry runs a subscription as one task per operation, with a graphql-core execution,
extension hooks and a JSON encoding per event and subscriber: ~500 µs for each delivery,
seconds per event for 10,000 subscribers. Here the websocket handlers name the operation
of their task (`serve`), and the subscription resolver, once it has done its checks, joins
a `Group`: every subscriber with the same document, operation name and variables shares
one execution and one encoded payload per event. Each member's frame is its own prefix,
the shared payload and a brace, written by the feed's loop with `send_now`.

Only a selection of plain fields is shared (`plain_subscription`): its result depends on
the event alone. A result with errors is encoded per member, with
each member's request id, exactly as the per-operation path does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import Context, ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
)
from graphql.execution.collect_fields import collect_fields
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.resolvers import is_default_resolver
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import Info

from resolvers.events import StatusEvent
from resolvers.subscriptions import Watch
from schema.errors import format_error
from server.transport.execution import FastExecutionContext

# How each protocol frames a result: `{<id>, "type": ..., "payload": <payload>}`, in the
# key order Strawberry's own messages have, so that the bytes are the same as before.
_FRAMES = {
    GRAPHQL_TRANSPORT_WS_PROTOCOL: ('{"id":', ',"type":"next","payload":'),
    GRAPHQL_WS_PROTOCOL: ('{"type":"data","id":', ',"payload":'),
}


@dataclass(frozen=True, slots=True)
class LiveOperation:
    """One websocket operation, as its subscription resolver needs it to write frames."""

    id: str
    protocol: str
    websocket: WebSocket
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    groups: Groups


_operation: ContextVar[LiveOperation | None] = ContextVar("live_operation", default=None)
_NO_CONTEXT = Context()


def serve(operation: LiveOperation) -> None:
    """Name the operation that the current task runs (its context only: set at the top
    of the operation's own task)."""
    _operation.set(operation)


def send_now(send: Coroutine[Any, Any, None]) -> bool:
    """Run a websocket send to its end if it gets there without waiting; False if it
    would have to wait.

    uvicorn's send suspends only while the transport's buffer is above its high-water
    mark (a peer that reads slower than we write), and does so before it writes anything;
    otherwise it writes and returns without suspending. Driving the coroutine by hand
    keeps the feed's loop from waiting on one slow reader: its send is closed unwritten
    and the caller drops that subscriber instead. That is an assumption about uvicorn
    (docs/changing.md, "Library internals we use"); with FAST_PATHS=off nothing here
    runs and Strawberry awaits every send in the operation's own task.
    """
    try:
        send.send(None)
    except StopIteration:
        return True
    send.close()
    return False


class Handoff(BaseException):
    """Raised by a subscription resolver once its checks passed and the feed writes its
    events: it unwinds Strawberry's per-operation machinery (the parked stream with its
    execution context, extension hooks and graphql-core executor, and the operation's
    task: about half of what an idle subscriber costs) up to the websocket handler, which
    keeps only `parked` until the operation ends.

    A BaseException, like the cancellation that takes the same way out of a parked
    operation: Strawberry and graphql-core turn `Exception`s into GraphQL errors, but let
    these pass, closing their generators and context managers on the way.
    """

    def __init__(self, watch: Watch, member: Member) -> None:
        super().__init__()
        self.parked = Parked(watch, member)


class Parked:
    """What is left of an operation handed off to the feed: its subscriber, and what its
    handler parked it with (`owner`, told when the feed ends it)."""

    __slots__ = ("_member", "_watch", "op_id", "owner", "token")

    def __init__(self, watch: Watch, member: Member) -> None:
        self._watch = watch
        self._member = member
        self.owner: ParkedOwner | None = None
        self.op_id = ""
        self.token: object = None

    def park(self, owner: ParkedOwner, op_id: str, token: object) -> None:
        self.owner, self.op_id, self.token = owner, op_id, token
        # The callback needs no context variable: it spares a copy of the context each.
        self._watch.ended.add_done_callback(self._ended, context=_NO_CONTEXT)

    def close(self) -> None:
        """Unsubscribe (again is harmless)."""
        self._watch.close()
        self._member.leave()
        self.owner = None

    def _ended(self, future: asyncio.Future[None]) -> None:
        owner = self.owner
        if owner is None or future.cancelled():
            return  # closed before the feed ended it
        error = future.exception()
        owner.parked_ended(self, error if isinstance(error, Exception) else None)


class ParkedOwner(Protocol):
    def parked_ended(self, parked: Parked, error: Exception | None) -> None: ...


def error_payload(error: Exception, request_id: str | None) -> dict[str, Any]:
    """The payload Strawberry sends for an error raised by a subscription's source
    stream, coded as every other error is (schema/errors.py)."""
    if not isinstance(error, GraphQLError):
        error = GraphQLError(str(error), original_error=error)
    return {"data": None, "errors": [format_error(error, request_id).formatted]}


class Group:
    """Subscribers of one document, operation name and variables: one execution and one
    payload per event for all of them."""

    __slots__ = ("_event", "_executor", "_payload", "_result", "_to_root", "key", "members")

    def __init__(
        self, key: tuple[Any, ...], executor: FastExecutionContext, to_root: Callable[[Any], Any]
    ) -> None:
        self.key = key
        self._executor = executor
        self._to_root = to_root
        self._event: object = None
        self._result: ExecutionResult | None = None
        self._payload: str | None = None
        self.members = 0

    def payload(self, event: StatusEvent) -> str | None:
        """The encoded payload of this event; None when it has errors, whose encoding
        depends on the member (`payload_for`). The feed hands the same event object to
        every member, so one execution serves them all."""
        if event is not self._event:
            self._result = execute_event(self._executor, self._to_root(event))
            self._payload = None if self._result.errors else _encode(self._result, None)
            self._event = event
        return self._payload

    def payload_for(self, request_id: str | None) -> str:
        assert self._result is not None
        return _encode(self._result, request_id)


def execute_event(executor: FastExecutionContext, root: Any) -> ExecutionResult:
    """graphql-core's own per-event execution of a subscription (what its response
    stream does for every subscriber)."""
    result: Any = executor.build_per_event_executor(root).execute_operation(False)
    if not isinstance(result, ExecutionResult):
        # Cannot happen for a plain selection; if it did, this member ends with a masked
        # error rather than an answer that is not the stock one.
        if hasattr(result, "close"):
            result.close()
        raise RuntimeError("a shared subscription event did not complete synchronously")
    return result


def _encode(result: ExecutionResult, request_id: str | None) -> str:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [format_error(e, request_id).formatted for e in result.errors]
    return orjson.dumps(payload).decode()


def join(info: Info, to_root: Callable[[Any], Any]) -> Member | None:
    """A member for the websocket operation the current task serves, or None: no such
    operation (the resolver was called some other way), or a selection that cannot be
    shared (the resolver then streams the events itself)."""
    operation = _operation.get()
    if operation is None:
        return None
    return operation.groups.join(operation, info, to_root)


class Member:
    """One subscriber of a group: its frame prefix and its websocket."""

    __slots__ = ("_gone", "_group", "_groups", "_prefix", "_request_id", "_websocket")

    def __init__(
        self, groups: Groups, group: Group, operation: LiveOperation, request_id: str
    ) -> None:
        self._groups: Groups | None = groups
        self._group = group
        start, middle = _FRAMES[operation.protocol]
        self._prefix = start + orjson.dumps(operation.id).decode() + middle
        self._websocket = operation.websocket
        self._request_id = request_id
        self._gone = False

    def deliver(self, event: StatusEvent) -> bool:
        """Write the event's frame now; False if the socket cannot take it without
        waiting (the feed then drops this subscriber)."""
        if self._gone:
            return True
        group = self._group
        # The group's payload of this event, when another member had it made already.
        payload = group._payload if event is group._event else group.payload(event)
        if payload is None:
            payload = group.payload_for(self._request_id)
        try:
            return send_now(self._websocket.send_text(f"{self._prefix}{payload}}}"))
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The peer is gone: the handler sees the disconnect and ends the operation.
            self._gone = True
            return True

    async def send(self, event: StatusEvent) -> None:
        """Write a replayed event's frame, waiting for the socket as long as it takes
        (the replay runs in the operation's own task, before the feed takes over)."""
        if self._gone:
            return
        group = self._group
        payload = group.payload(event)
        if payload is None:
            payload = group.payload_for(self._request_id)
        try:
            await self._websocket.send_text(f"{self._prefix}{payload}}}")
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._gone = True

    @property
    def active(self) -> bool:
        return self._groups is not None

    def leave(self) -> None:
        """Leave the group (again is harmless)."""
        if self._groups is not None:
            self._groups.leave(self._group)
            self._groups = None


class Groups:
    """The groups of one app, by document, operation name and variables."""

    def __init__(self) -> None:
        self._groups: dict[tuple[Any, ...], Group] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def join(
        self, operation: LiveOperation, info: Info, to_root: Callable[[Any], Any]
    ) -> Member | None:
        try:
            variables = orjson.dumps(operation.variables or {}, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return None  # not keyable: served on its own
        key = (operation.query, operation.operation_name, variables)
        group = self._groups.get(key)
        if group is None:
            executor = _executor(info, operation)
            if executor is None or not plain_subscription(executor):
                return None
            group = self._groups[key] = Group(key, executor, to_root)
        # The member keeps the group's key, not its own copy of it (a document each).
        group.members += 1
        return Member(self, group, operation, info.context.request_id)

    def leave(self, group: Group) -> None:
        group.members -= 1
        if group.members <= 0 and self._groups.get(group.key) is group:
            del self._groups[group.key]


def _executor(info: Info, operation: LiveOperation) -> FastExecutionContext | None:
    """An executor of the member's operation for events only: built from the document
    Strawberry parsed and validated for it, with no context (plain fields never read it),
    so that it keeps no member alive."""
    raw = info._raw_info
    document = DocumentNode(definitions=(raw.operation, *raw.fragments.values()))
    executor = FastExecutionContext.build(raw.schema, document, None, None, operation.variables)
    return executor if isinstance(executor, FastExecutionContext) else None


def plain_subscription(executor: FastExecutionContext) -> bool:
    """Whether every event of this subscription is completed by `FastExecutionContext`'s
    plain pass alone (default resolvers without arguments on object types without
    `is_type_of`, down to the leaves), so that its result depends on the event only and
    one execution per event can serve every subscriber of the same document."""
    schema = executor.schema
    root_type = schema.subscription_type
    middleware = executor.middleware_manager
    if root_type is None or (middleware is not None and middleware.middlewares):
        return False
    grouped_field_set, new_defer_usages, _ = collect_fields(
        schema,
        executor.fragments,
        executor.variable_values,
        root_type,
        executor.operation,
        executor.hide_suggestions,
    )
    if new_defer_usages or len(grouped_field_set) != 1:
        return False
    (details,) = grouped_field_set.values()
    field_def = schema.get_field(root_type, details[0].node.name.value)
    return field_def is not None and _plain_selection(executor, field_def.type, details)


def _plain_selection(
    executor: FastExecutionContext, return_type: GraphQLOutputType, field_details_list: Any
) -> bool:
    while isinstance(return_type, GraphQLNonNull | GraphQLList):
        return_type = return_type.of_type
    if isinstance(return_type, GraphQLScalarType | GraphQLEnumType):
        return True
    if not isinstance(return_type, GraphQLObjectType) or return_type.is_type_of:
        return False
    grouped_field_set, new_defer_usages, _ = executor.collect_subfields(
        return_type, field_details_list
    )
    if new_defer_usages:
        return False
    for details in grouped_field_set.values():
        node = details[0].node
        if node.name.value == "__typename":
            continue
        field_def = executor.schema.get_field(return_type, node.name.value)
        if (
            field_def is None
            or field_def.resolve is None
            or not is_default_resolver(field_def.resolve)
            or field_def.args
            or node.arguments
            or not _plain_selection(executor, field_def.type, details)
        ):
            return False
    return True


class Feed:
    """The schema's live feed (schema/feed.py's LiveFeed): joins an operation's group and
    hands the operation over. The schema gets it from server/assembly.py."""

    def join(self, info: Info, to_root: Callable[[Any], Any]) -> Member | None:
        return join(info, to_root)

    def handoff(self, watched: Watch, seat: Any) -> BaseException:
        if not isinstance(seat, Member):
            raise TypeError(f"not a seat of this feed: {seat!r}")
        return Handoff(watched, seat)


FEED = Feed()
