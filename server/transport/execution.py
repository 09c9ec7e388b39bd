"""A quicker way through the plain parts of a result.

graphql-core completes every field on its own: a `Path`, a `GraphQLResolveInfo`, a
resolver call and several type checks each, about 30 µs per field on this stack, so a
page of ten orders with lines and owner (about 185 fields) spent more in that machinery
than in the database. Most of those fields are plain attributes of the objects the
resolvers return (`strawberry.resolvers.is_default_resolver`).

`FastExecutionContext.execute_fields` completes an object whose selected fields are all
such attributes (leaves, lists, and nested objects of the same kind) in one tight pass,
with the same output coercion graphql-core would use. A selection is compiled once per
execution into a plan (response name, attribute getter, the field's type unwrapped), so
that each object costs a loop over its plan rather than a schema lookup and five type
checks a field. Anything the pass is not sure about (a field with a resolver of its own
or arguments, an abstract type, an `is_type_of` check, a null where the schema says
non-null, a value that does not coerce) makes it give up on that object and hand it to
graphql-core unchanged, which then produces exactly the result and errors it always did.
The fast pass has no side effects to undo: it only reads attributes.

Documents come from the parser cache, the same objects for every request that sends the
same text; so sub-selections and plans are remembered across requests, keyed by the
document's nodes (held, so that their ids cannot be reused), when the operation has no
directives (`@skip(if: $v)` makes a selection depend on the variables).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from inspect import isawaitable
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLError,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    Node,
    OperationDefinitionNode,
)
from graphql import execute as graphql_execute
from graphql.pyutils import Undefined
from graphql.validation import specified_rules
from strawberry.exceptions import MissingQueryError
from strawberry.execution import optimized_is_awaitable
from strawberry.resolvers import is_default_resolver
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.operation import get_first_operation, get_operation_type

from infra.memo import Attached
from schema.errors import format_error
from schema.limits import cost_error

_TYPENAME = "__typename"
_LEAF_TYPES = (GraphQLScalarType, GraphQLEnumType)
_NOT_LISTS = (str, bytes, dict)
_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1
# Values these scalars pass through unchanged (graphql-core's own coercion does the same).
_IDENTITY: dict[Any, type] = {GraphQLString: str, GraphQLID: str, GraphQLBoolean: bool}

# What a plan entry's value is, once NonNull is unwrapped.
_LEAF, _LIST, _OBJECT = 0, 1, 2


class _NotPlain(Exception):
    """This object needs graphql-core's full treatment."""


class _Shape:
    """A field's (or list item's) type, unwrapped for the fast pass."""

    __slots__ = ("coerce", "details", "identity", "item", "kind", "non_null", "type")

    def __init__(self, return_type: GraphQLOutputType, details: Any) -> None:
        self.non_null = isinstance(return_type, GraphQLNonNull)
        named = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
        self.type: Any = named
        self.details = details
        self.item: _Shape | None = None
        self.identity: type | None = None
        self.coerce: Callable[[Any], Any] | None = None
        if isinstance(named, _LEAF_TYPES):
            self.kind = _LEAF
            self.identity = _IDENTITY.get(named)
            self.coerce = named.coerce_output_value
        elif isinstance(named, GraphQLList):
            self.kind = _LIST
            self.item = _Shape(named.of_type, details)
        elif isinstance(named, GraphQLObjectType) and not named.is_type_of:
            self.kind = _OBJECT
        else:
            raise _NotPlain  # interfaces and unions, or an is_type_of check


# One entry per response field: (response name, getter, shape); the getter is None for
# __typename, whose value the shape slot then holds.
_Plan = list[tuple[str, Callable[[Any], Any] | None, Any]]


def _getter(field_def: Any) -> Callable[[Any], Any]:
    """How the field's default resolver reads it: the attribute itself when Strawberry
    would call getattr, else the resolver."""
    definition = (field_def.extensions or {}).get("strawberry-definition")
    resolve: Callable[[Any], Any] = field_def.resolve
    if definition is not None and getattr(definition, "default_resolver", None) is getattr:
        return operator.attrgetter(definition.python_name)
    return resolve


class _Memo:
    """What an operation's executions can share: whether its document has directives, its
    sub-selections by field nodes, and its compiled plans by grouped field set. Attached
    to the operation node (infra/memo.py), so it goes when the document goes."""

    __slots__ = ("directive_free", "plans", "subfields")

    def __init__(self) -> None:
        self.directive_free: bool | None = None
        self.subfields: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
        self.plans: dict[tuple[int, int], tuple[tuple[Any, ...], _Plan]] = {}


_memos: Attached[_Memo] = Attached(_Memo)


def _known(
    entries: dict[Any, tuple[tuple[Any, ...], Any]], key: Any, holds: tuple[Any, ...]
) -> Any:
    """The value kept under `key` if it was kept for these very objects."""
    entry = entries.get(key)
    if entry is None or not all(a is b for a, b in zip(entry[0], holds, strict=True)):
        return None
    return entry[1]


def _has_directives(node: Any) -> bool:
    if isinstance(node, DirectiveNode):
        return True
    for key in node.keys:
        value = getattr(node, key, None)
        children = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(c, Node) and _has_directives(c) for c in children):
            return True
    return False


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Shared with the copies a subscription makes for each event (see collect_subfields).
        self._subfields_by_nodes: dict[tuple[Any, ...], Any] = {}
        # Compiled plans by grouped field set (kept alive here, so ids stay unique).
        self._plans: dict[int, tuple[Any, _Plan]] = {}
        self._shared: bool | None = None

    def _shares_across_requests(self) -> bool:
        """Whether this operation's selections depend on its document alone."""
        if self._shared is None:
            operation: OperationDefinitionNode = self.operation
            memo = _memos.of(operation)
            if memo.directive_free is None:
                nodes = (operation, *self.fragment_definitions.values())
                memo.directive_free = not any(_has_directives(n) for n in nodes)
            self._shared = memo.directive_free
        return self._shared

    def collect_subfields(self, return_type: GraphQLObjectType, field_details_list: Any) -> Any:
        """graphql-core memoizes sub-selections by the identity of the field list, which a
        subscription collects anew for every event: each event collected them again and
        added an entry that was never dropped. The nodes are the document's own, the same
        for every event, so they make the key."""
        if any(d.defer_usage or d.fragment_variable_values for d in field_details_list):
            return super().collect_subfields(return_type, field_details_list)
        key = (return_type, *(id(d.node) for d in field_details_list))
        collected = self._subfields_by_nodes.get(key)
        if collected is not None:
            return collected
        shared = self._shares_across_requests()
        holds = (return_type, *(d.node for d in field_details_list))
        kept = _memos.of(self.operation).subfields if shared else None
        if kept is not None:
            collected = _known(kept, key, holds)
        if collected is None:
            collected = super().collect_subfields(return_type, field_details_list)
            if kept is not None:
                kept[key] = (holds, collected)
        self._subfields_by_nodes[key] = collected
        return collected

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Any,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        middleware = self.middleware_manager
        if position_context is None and (middleware is None or not middleware.middlewares):
            try:
                plan = self._plan(parent_type, grouped_field_set)
                return self._run(plan, source_value)
            except Exception:  # noqa: S110 - _NotPlain, or an error graphql-core will report
                pass
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> _Plan:
        known = self._plans.get(id(grouped_field_set))
        if known is not None and known[0] is grouped_field_set:
            return known[1]
        key = (id(parent_type), id(grouped_field_set))
        holds = (parent_type, grouped_field_set)
        kept = _memos.of(self.operation).plans if self._shared else None
        plan = _known(kept, key, holds) if kept is not None else None
        if plan is None:
            plan = self._compile(parent_type, grouped_field_set)
            # Grouped field sets outlive the request only when collect_subfields shared
            # them; then their plans are worth keeping too.
            if kept is not None:
                kept[key] = (holds, plan)
        self._plans[id(grouped_field_set)] = (grouped_field_set, plan)
        return plan

    def _compile(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> _Plan:
        get_field = self.schema.get_field
        plan: _Plan = []
        for response_name, field_details_list in grouped_field_set.items():
            node = field_details_list[0].node
            name = node.name.value
            if name == _TYPENAME:
                plan.append((response_name, None, parent_type.name))
                continue
            field_def = get_field(parent_type, name)
            resolve = field_def.resolve if field_def is not None else None
            if (
                resolve is None
                or not is_default_resolver(resolve)
                or field_def.args  # type: ignore[union-attr]
                or node.arguments
            ):
                raise _NotPlain
            shape = _Shape(field_def.type, field_details_list)  # type: ignore[union-attr]
            plan.append((response_name, _getter(field_def), shape))
        return plan

    def _run(self, plan: _Plan, source: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for response_name, get, shape in plan:
            if get is None:
                results[response_name] = shape
            else:
                results[response_name] = self._value(shape, get(source))
        return results

    def _value(self, shape: _Shape, value: Any) -> Any:
        if value is None:
            if shape.non_null:
                raise _NotPlain  # graphql-core raises the non-null error
            return None
        kind = shape.kind
        if kind == _LEAF:
            if shape.identity is not None and type(value) is shape.identity:
                return value
            if shape.type is GraphQLInt and type(value) is int and _MIN_INT <= value <= _MAX_INT:
                return value
            coerced = shape.coerce(value)  # type: ignore[misc]
            if coerced is None or coerced is Undefined:
                raise _NotPlain
            return coerced
        if kind == _LIST:
            if isinstance(value, _NOT_LISTS) or not isinstance(value, Iterable):
                raise _NotPlain
            item = shape.item
            assert item is not None
            return [self._value(item, v) for v in value]
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(shape.type, shape.details)
        if new_defer_usages:
            raise _NotPlain
        return self._run(self._plan(shape.type, grouped_field_set), value)


# --- one HTTP operation without Strawberry's per-request machinery --------------------------


class DirectOperation:
    """What `strawberry.Schema.execute` does for one query or mutation of this schema
    (FAST_PATHS=on: its extensions are ErrorCodes and DocumentRules, nothing else), done
    without the machinery that runs any extensions: Strawberry makes an execution context,
    new extension instances, a runner and four context managers per request and looks each
    extension's hooks up with `inspect` for every stage, about 40 µs of a trivial query.

    The same steps in the same order, with the same objects: the policy's parse (one per
    text), its validation (cached) and cost, graphql-core's execution with the fast
    context, then the errors coded as ErrorCodes codes them and `extensions.cost` as
    DocumentRules reports it. The stock twin is Strawberry's own `Schema.execute`
    (FAST_PATHS=off, and this schema when it has anything else: a directive, another
    extension); tests/test_direct_operation.py holds both to the same answers."""

    def __init__(self, schema: Any, policy: Any, *, quiet: bool) -> None:
        self.schema = schema
        self.policy = policy
        self.quiet = quiet
        # Strawberry's default rules and what DocumentRules.on_operation adds to them.
        self.rules = (*specified_rules, *policy.rules)
        self.max_cost: int = policy.limits.max_cost
        self.allowed = OperationType.from_http("POST")

    async def execute(
        self,
        query: str | None,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        operation_extensions: dict[str, Any] | None,
    ) -> ExecutionResult:
        """Raises what Schema.execute raises (MissingQueryError, CannotGetOperationTypeError,
        InvalidOperationTypeError); the view answers them as Strawberry's view does."""
        if not query:
            raise MissingQueryError
        policy = self.policy
        graphql_schema = self.schema._schema
        requested: int | None = None
        document: DocumentNode | None = None
        op_type: OperationType | None = None
        errors: list[GraphQLError]
        data: Any = None
        coded = True  # errors that ErrorCodes codes (it does not see an operation that raised)
        try:
            try:
                document = policy.parse(query)
            except GraphQLError as error:
                errors = [error]
            except Exception as error:  # as Strawberry's parsing stage turns it into one
                errors = [GraphQLError(str(error), original_error=error)]
            else:
                if operation_name is None:
                    first = get_first_operation(document)
                    operation_name = first.name.value if first and first.name else None
                try:
                    op_type = get_operation_type(document, operation_name)
                except RuntimeError as error:
                    raise CannotGetOperationTypeError(operation_name) from error
                if op_type not in self.allowed:
                    raise InvalidOperationTypeError(op_type)
                errors = policy.validate(graphql_schema, document, self.rules)
                requested = policy.cost(graphql_schema, document, operation_name, variables, query)
                if not errors and requested > self.max_cost:
                    errors = [cost_error(requested, self.max_cost)]
                if not errors:
                    result = graphql_execute(
                        graphql_schema,
                        document,
                        root_value=None,
                        variable_values=variables,
                        operation_name=operation_name,
                        context_value=context,
                        is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
                        executor_class=FastExecutionContext,
                        operation_extensions=operation_extensions,
                    )
                    if isawaitable(result):
                        result = await result
                    data, errors = result.data, result.errors or []
        except (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError):
            raise
        except Exception as exc:  # as Schema.execute answers what its stages raised
            errors, data, coded = (
                [
                    exc
                    if isinstance(exc, GraphQLError)
                    else GraphQLError(str(exc), original_error=exc)
                ],
                None,
                False,
            )
        if errors and coded:
            request_id = getattr(context, "request_id", None)
            errors = [format_error(e, request_id, quiet=self.quiet) for e in errors]
        if document is not None and op_type is OperationType.SUBSCRIPTION:
            extensions: dict[str, Any] = {}
        else:
            extensions = {"cost": {"requested": requested, "limit": self.max_cost}}
        return ExecutionResult(data=data, errors=errors or None, extensions=extensions)
