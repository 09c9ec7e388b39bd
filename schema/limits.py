"""What a document may ask for, measured in time linear in its size.

Three parts, each usable on its own:

- `check_document(document, limits)`: one walk over the parsed document, before any of
  graphql-core's rules, that refuses documents too big to validate cheaply: more nodes,
  fragment spreads, selections in one selection set, or repeats of one response key than
  the limits allow, and fragment cycles. Then the depth and alias limits, computed per
  fragment once (a fragment spread twice, at each of 30 levels, is still measured 31
  times, not 2^30: Strawberry's QueryDepthLimiter and MaxAliasesLimiter re-walked every
  spread).
- `CostMeter`: a document's cost (Shopify's model, see README "Query cost"), memoised
  per document, operation and page sizes asked for.
- `document_rules(limits)`: the same checks as graphql-core validation rules, for a
  schema that validates through Strawberry's own extensions instead of
  server/transport/documents.py: the limits rule refuses a document in `enter_document`, before
  any other rule has walked it, and the cost rule refuses an operation over the budget.

Why the repeat limit: graphql-core's OverlappingFieldsCanBeMergedRule compares every pair
of fields that share a response key (and, recursively, their sub-selections), so `{ me
{ id } }` 990 times is half a million comparisons. Past a few repeats there is no reason
to send the same field again; capped, the comparisons stay a few thousand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    VariableNode,
    get_named_type,
    is_composite_type,
)
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

if TYPE_CHECKING:
    from infra.settings import Settings

VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
# How many items a list field without a `limit` is taken to hold.
DEFAULT_LIST_SIZE = 10
# The argument that says how many items a page (or a list) holds.
PAGE_ARGUMENT = "limit"
# Lists without a `limit` whose longest answer is known: (type, field) -> items.
# orderStats: a row per day (at most 366) and status (5).
LIST_SIZES: dict[tuple[str, str], int] = {("Query", "orderStats"): 366 * 5}
_CACHED_COSTS = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 15
    max_aliases: int = 30
    max_nodes: int = 2000
    max_spreads: int = 100
    max_selections: int = 100
    max_repeats: int = 20
    max_cost: int = 2500

    @classmethod
    def from_settings(cls, settings: Settings | None) -> Limits:
        if settings is None:
            return cls()
        return cls(
            max_depth=settings.query_max_depth,
            max_aliases=settings.query_max_aliases,
            max_nodes=settings.query_max_nodes,
            max_spreads=settings.query_max_spreads,
            max_selections=settings.query_max_selections,
            max_repeats=settings.query_max_repeated_fields,
            max_cost=settings.query_max_cost,
        )


class LimitExceeded(ValidationAbortedError):
    """A document over a limit. Raised from a validation rule it ends validation there
    (graphql-core keeps it as the last error); no other rule walks the document."""

    def __init__(self, message: str, limit: str, **extensions: Any) -> None:
        super().__init__(
            message, extensions={"code": VALIDATION_FAILED, "limit": limit, **extensions}
        )


# --- the walk ---------------------------------------------------------------------------


class _Definition:
    """What one operation or fragment holds, before its spreads are followed."""

    __slots__ = ("aliases", "depth", "name", "node", "spreads")

    def __init__(self, name: str, node: OperationDefinitionNode | FragmentDefinitionNode):
        self.name = name
        self.node = node
        self.depth = 0  # the deepest field level reached without following spreads
        self.aliases = 0
        # (fragment name, depth at the spread): every spread, repeats included.
        self.spreads: list[tuple[str, int]] = []


def _count_value(value: Any) -> int:
    """Nodes in an argument's value (lists and objects nest)."""
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, ListValueNode):
            stack.extend(node.values)
        elif isinstance(node, ObjectValueNode):
            stack.extend(f.value for f in node.fields)
    return count


def _count_directives(directives: tuple[DirectiveNode, ...] | None) -> int:
    count = 0
    for directive in directives or ():
        count += 1
        for argument in directive.arguments or ():
            count += 1 + _count_value(argument.value)
    return count


def _walk(
    definition: _Definition, limits: Limits, totals: list[int], errors: list[LimitExceeded]
) -> None:
    """One pass over a definition's own selections: counts, repeats, depth, aliases.

    `totals` is [nodes, spreads, repeats] for the whole document. The depth counts field and
    inline fragment levels (introspection fields are left to graphql-core's own
    MaxIntrospectionDepthRule, as Strawberry's depth limiter left them).
    """
    node = definition.node
    totals[0] += _count_directives(node.directives)
    for variable in node.variable_definitions or ():
        totals[0] += 1 + _count_directives(variable.directives)
        if variable.default_value is not None:
            totals[0] += _count_value(variable.default_value)
    # (selection set, depth of its selections, the response keys of its owner)
    stack: list[tuple[SelectionSetNode, int, dict[str, int]]] = [(node.selection_set, 0, {})]
    while stack:
        selection_set, depth, keys = stack.pop()
        selections = selection_set.selections
        if len(selections) > limits.max_selections:
            errors.append(
                LimitExceeded(
                    f"A selection set has {len(selections)} selections, more than "
                    f"{limits.max_selections}.",
                    "QUERY_MAX_SELECTIONS",
                )
            )
            return
        for selection in selections:
            totals[0] += 1 + _count_directives(selection.directives)
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                seen = keys.get(key, 0)
                keys[key] = seen + 1
                if seen:
                    totals[2] += 1
                if selection.alias:
                    definition.aliases += 1
                for argument in selection.arguments or ():
                    totals[0] += 1 + _count_value(argument.value)
                if selection.selection_set is not None:
                    if selection.name.value.startswith("__"):
                        # Still counted and checked, but adds no depth.
                        stack.append((selection.selection_set, -(10**9), {}))
                        continue
                    if depth + 1 > definition.depth:
                        definition.depth = depth + 1
                    stack.append((selection.selection_set, depth + 1, {}))
            elif isinstance(selection, InlineFragmentNode):
                # Its fields merge with its owner's (as graphql-core's field merging
                # sees them), and a level of nesting counts as depth.
                if depth + 1 > definition.depth:
                    definition.depth = depth + 1
                stack.append((selection.selection_set, depth + 1, keys))
            elif isinstance(selection, FragmentSpreadNode):
                totals[1] += 1
                definition.spreads.append((selection.name.value, depth))


def _fragment_cycle(definitions: Mapping[str, _Definition]) -> list[str] | None:
    """A cycle of fragment spreads, if there is one (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in definitions:
        if root in state:
            continue
        path = [root]
        state[root] = 1
        iterators = [iter(definitions[root].spreads)]
        while iterators:
            for name, _ in iterators[-1]:
                if name not in definitions:
                    continue
                seen = state.get(name)
                if seen == 1:
                    return [*path[path.index(name) :], name]
                if seen is None:
                    state[name] = 1
                    path.append(name)
                    iterators.append(iter(definitions[name].spreads))
                    break
            else:
                iterators.pop()
                state[path.pop()] = 2
    return None


def check_document(document: DocumentNode, limits: Limits) -> list[LimitExceeded]:
    """Every limit the document is over (an empty list: within them all). Linear in the
    size of the document: each definition is walked once, each fragment measured once."""
    errors: list[LimitExceeded] = []
    totals = [0, 0, 0]
    operations: list[_Definition] = []
    fragments: dict[str, _Definition] = {}
    for node in document.definitions:
        if isinstance(node, OperationDefinitionNode):
            definition = _Definition(node.name.value if node.name else "anonymous", node)
            operations.append(definition)
        elif isinstance(node, FragmentDefinitionNode):
            definition = _Definition(node.name.value, node)
            fragments.setdefault(node.name.value, definition)
        else:
            continue
        totals[0] += 1
        _walk(definition, limits, totals, errors)
        if errors:
            return errors
    nodes, spreads, repeats = totals
    if nodes > limits.max_nodes:
        errors.append(
            LimitExceeded(
                f"The document has {nodes} nodes, more than {limits.max_nodes}.",
                "QUERY_MAX_NODES",
            )
        )
    if spreads > limits.max_spreads:
        errors.append(
            LimitExceeded(
                f"The document has {spreads} fragment spreads, more than {limits.max_spreads}.",
                "QUERY_MAX_SPREADS",
            )
        )
    if repeats > limits.max_repeats:
        errors.append(
            LimitExceeded(
                f"The document selects {repeats} fields under a response key already "
                f"selected beside them, more than {limits.max_repeats}.",
                "QUERY_MAX_REPEATED_FIELDS",
            )
        )
    if errors:
        return errors
    if (cycle := _fragment_cycle(fragments)) is not None:
        via = ", ".join(f"'{name}'" for name in cycle[1:-1])
        return [
            LimitExceeded(
                f"Cannot spread fragment '{cycle[0]}' within itself"
                + (f" via {via}." if via else "."),
                "FRAGMENT_CYCLE",
            )
        ]
    # Acyclic: each fragment's depth and aliases, spreads followed, once each.
    depths: dict[str, int] = {}
    aliases: dict[str, int] = {}
    for name in _post_order(fragments):
        definition = fragments[name]
        depth, count = definition.depth, definition.aliases
        for spread, at in definition.spreads:
            if spread in fragments:
                depth = max(depth, at + depths[spread])
                count += aliases[spread]
        depths[name], aliases[name] = depth, count
    total_aliases = 0
    for operation in operations:
        depth, count = operation.depth, operation.aliases
        for spread, at in operation.spreads:
            if spread in fragments:
                depth = max(depth, at + depths[spread])
                count += aliases[spread]
        total_aliases += count
        # As Strawberry's QueryDepthLimiter counted: the root fields are level 0, and
        # `depth` is the level of the deepest fields.
        if depth > limits.max_depth:
            errors.append(
                LimitExceeded(
                    f"'{operation.name}' exceeds maximum operation depth of {limits.max_depth}",
                    "QUERY_MAX_DEPTH",
                )
            )
    if total_aliases > limits.max_aliases:
        errors.append(
            LimitExceeded(
                f"{total_aliases} aliases found. Allowed: {limits.max_aliases}",
                "QUERY_MAX_ALIASES",
            )
        )
    return errors


def _post_order(fragments: Mapping[str, _Definition]) -> list[str]:
    """Fragment names, each after every fragment it spreads (the graph is acyclic)."""
    order: list[str] = []
    done: set[str] = set()
    for root in fragments:
        if root in done:
            continue
        done.add(root)
        path = [root]
        iterators = [iter(fragments[root].spreads)]
        while iterators:
            for name, _ in iterators[-1]:
                if name in fragments and name not in done:
                    done.add(name)
                    path.append(name)
                    iterators.append(iter(fragments[name].spreads))
                    break
            else:
                iterators.pop()
                order.append(path.pop())
    return order


# --- cost -------------------------------------------------------------------------------


def _page_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables a `limit` argument reads (their values change the cost)."""
    names: set[str] = set()
    stack: list[SelectionSetNode] = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FieldNode):
                for argument in selection.arguments or ():
                    if argument.name.value == PAGE_ARGUMENT and isinstance(
                        argument.value, VariableNode
                    ):
                        names.add(argument.value.name.value)
                if selection.selection_set is not None:
                    stack.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
    return tuple(sorted(names))


class CostMeter:
    """The cost of an operation: each field returning an object costs 1, plus what it
    selects; a field returning a list of objects costs that for each item it may return:
    its `limit`, or its parent's `limit` (a page's items), or its known longest answer
    (LIST_SIZES), or DEFAULT_LIST_SIZE. Scalars,
    enums and introspection cost nothing.

    Memoised per document, operation name and the values of the variables its `limit`
    arguments read; within one computation, per fragment and page size."""

    def __init__(self, schema: GraphQLSchema, max_size: int = _CACHED_COSTS) -> None:
        self.schema = schema
        # Plain dicts, emptied when full: a lookup is on every request's path.
        self._costs: dict[tuple[Any, ...], int] = {}
        self._page_variables: dict[Any, tuple[str, ...]] = {}
        self._max_size = max_size

    def cost(
        self,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        text: str | None = None,
    ) -> int:
        """`text`: the document's source, a cheaper key than its nodes (whose hash walks
        the whole tree)."""
        source: Any = document if text is None else text
        names = self._page_variables.get(source)
        if names is None:
            if len(self._page_variables) >= self._max_size:
                self._page_variables.clear()
            names = self._page_variables[source] = _page_variables(document)
        values = tuple(_int_or_none((variables or {}).get(n)) for n in names) if names else ()
        key = (source, operation_name, values)
        found = self._costs.get(key)
        if found is None:
            if len(self._costs) >= self._max_size:
                self._costs.clear()
            pages = dict(zip(names, values, strict=True))
            found = self._costs[key] = operation_cost(self.schema, document, operation_name, pages)
        return found


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """The cost of the operation `operation_name` picks (0 when it picks none)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return 0
    return _Cost(schema, document, operations[0], variables or {}).operation()


class _Cost:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.operation_node = operation
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.defaults: dict[str, int | None] = {
            v.variable.name.value: (
                int(v.default_value.value) if isinstance(v.default_value, IntValueNode) else None
            )
            for v in operation.variable_definitions or ()
        }
        self.variables = variables
        self.memo: dict[tuple[str, int | None], int] = {}
        self.active: set[str] = set()

    def operation(self) -> int:
        root = self.schema.get_root_type(self.operation_node.operation)
        if root is None:
            return 0
        return self.selections(root, self.operation_node.selection_set, None)

    def selections(self, parent: Any, selection_set: SelectionSetNode, page: int | None) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection, page)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(target or parent, selection.selection_set, page)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.spread(selection.name.value, page)
        return total

    def spread(self, name: str, page: int | None) -> int:
        key = (name, page)
        if key in self.memo:
            return self.memo[key]
        fragment = self.fragments.get(name)
        if fragment is None or name in self.active:  # unknown or a cycle: validation says so
            return 0
        self.active.add(name)
        target = self.schema.get_type(fragment.type_condition.name.value)
        cost = self.selections(target, fragment.selection_set, page) if target else 0
        self.active.discard(name)
        self.memo[key] = cost
        return cost

    def field(self, parent: Any, node: FieldNode, page: int | None) -> int:
        name = node.name.value
        if name.startswith("__") or node.selection_set is None:
            return 0
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0
        definition = parent.fields.get(name)
        if definition is None:
            return 0
        named = get_named_type(definition.type)
        if not is_composite_type(named):
            return 0
        limit = self.limit(node, definition)
        inner = 1 + self.selections(named, node.selection_set, limit)
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        if isinstance(field_type, GraphQLList):
            size = limit if limit is not None else page if page is not None else DEFAULT_LIST_SIZE
            size = LIST_SIZES.get((parent.name, name), size)
            return max(size, 0) * inner
        return inner

    def limit(self, node: FieldNode, definition: Any) -> int | None:
        argument = definition.args.get(PAGE_ARGUMENT)
        if argument is None:
            return None
        given: ArgumentNode | None = next(
            (a for a in node.arguments or () if a.name.value == PAGE_ARGUMENT), None
        )
        if given is None:
            default = argument.default_value
            return _int_or_none(default)
        value = given.value
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            name = value.name.value
            found = _int_or_none(self.variables.get(name))
            if found is not None:
                return found
            if (default := self.defaults.get(name)) is not None:
                return default
            return _int_or_none(argument.default_value)
        return None


def cost_error(cost: int, limit: int) -> GraphQLError:
    return LimitExceeded(
        f"The query costs {cost}, more than the limit of {limit} (see README, Query cost).",
        "QUERY_MAX_COST",
        cost={"requested": cost, "limit": limit},
    )


# --- as validation rules ----------------------------------------------------------------


class DocumentLimitsRule(ASTValidationRule):
    """`check_document` as a rule: a document over a limit ends validation in
    `enter_document`, before any rule has walked it."""

    limits: ClassVar[Limits] = Limits()

    def enter_document(self, node: DocumentNode, *_args: Any) -> None:
        errors = check_document(node, self.limits)
        if errors:
            for error in errors[:-1]:
                self.report_error(error)
            raise errors[-1]


class QueryCostRule(ASTValidationRule):
    """Refuses every operation of the document that costs more than the budget. (Without
    variables: a `limit` read from a variable counts as its default.)"""

    limits: ClassVar[Limits] = Limits()

    context: ValidationContext

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        cost = _Cost(self.context.schema, self.context.document, node, {}).operation()
        if cost > self.limits.max_cost:
            self.report_error(cost_error(cost, self.limits.max_cost))


def document_rules(limits: Limits) -> tuple[type[ASTValidationRule], ...]:
    """The limits as graphql-core validation rules (for Strawberry's AddValidationRules):
    put them first; the limits rule ends validation of a document over a limit."""
    limits_rule = type("DocumentLimitsRule", (DocumentLimitsRule,), {"limits": limits})
    cost_rule = type("QueryCostRule", (QueryCostRule,), {"limits": limits})
    return (limits_rule, cost_rule)


def cost_results(context: Any, requested: int | None, limit: int) -> dict[str, Any]:
    """A response's `extensions.cost`; none on a subscription's frames (each event is not
    a request the client could make cheaper)."""
    if context.graphql_document is not None:
        try:
            if context.operation_type is OperationType.SUBSCRIPTION:
                return {}
        except Exception:
            return {"cost": {"requested": requested, "limit": limit}}
    return {"cost": {"requested": requested, "limit": limit}}


def cost_extension(limits: Limits) -> type[SchemaExtension]:
    """For a schema that validates through Strawberry's own extensions (with
    `document_rules`): a Strawberry extension that puts `extensions.cost` on every
    response and refuses an operation over the budget, variables counted. One meter (and
    its memo) per call: call it once per schema."""
    meters: list[CostMeter] = []

    class QueryCost(SchemaExtension):
        requested: int | None = None

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            if context.graphql_document is not None:
                schema = context.schema._schema
                if not meters or meters[0].schema is not schema:
                    meters[:] = [CostMeter(schema)]
                variables = context.variables if isinstance(context.variables, dict) else None
                self.requested = meters[0].cost(
                    context.graphql_document, context.operation_name, variables, context.query
                )
                if self.requested > limits.max_cost and not context.pre_execution_errors:
                    # Set before validation runs: Strawberry then skips it and refuses.
                    context.pre_execution_errors = [cost_error(self.requested, limits.max_cost)]
            yield

        def get_results(self) -> dict[str, Any]:
            return cost_results(self.execution_context, self.requested, limits.max_cost)

    return QueryCost
