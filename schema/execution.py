"""A quicker way through the plain parts of a result.

graphql-core completes every field on its own: a `Path`, a `GraphQLResolveInfo`, a
resolver call and several type checks each, about 30 µs per field on this stack, so a
page of ten orders with lines and owner (about 185 fields) spent more in that machinery
than in the database. Most of those fields are plain attributes of the objects the
resolvers return (Strawberry marks their resolvers `_is_default`).

`FastExecutionContext.execute_fields` completes an object whose selected fields are all
such attributes (leaves, lists, and nested objects of the same kind) in one tight pass,
with the same resolvers and the same output coercion graphql-core would use. Anything it
is not sure about (a field with a resolver of its own or arguments, an abstract type,
an `is_type_of` check, a null where the schema says non-null, an awaitable, a value that
does not coerce) makes it give up on that object and hand it to graphql-core unchanged,
which then produces exactly the result and errors it always did. The fast pass has no
side effects to undo: it only reads attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
)
from graphql.pyutils import Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

_TYPENAME = "__typename"
_LEAF_TYPES = (GraphQLScalarType, GraphQLEnumType)
_NOT_LISTS = (str, bytes, dict)


class _NotPlain(Exception):
    """This object needs graphql-core's full treatment."""


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Shared with the copies a subscription makes for each event (see collect_subfields).
        self._subfields_by_nodes: dict[tuple[Any, ...], Any] = {}

    def collect_subfields(self, return_type: GraphQLObjectType, field_details_list: Any) -> Any:
        """graphql-core memoizes sub-selections by the identity of the field list, which a
        subscription collects anew for every event: each event collected them again and
        added an entry that was never dropped. The nodes are the document's own, the same
        for every event, so they make the key."""
        if any(d.defer_usage or d.fragment_variable_values for d in field_details_list):
            return super().collect_subfields(return_type, field_details_list)
        key = (return_type, *(id(d.node) for d in field_details_list))
        collected = self._subfields_by_nodes.get(key)
        if collected is None:
            collected = self._subfields_by_nodes[key] = super().collect_subfields(
                return_type, field_details_list
            )
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
                return self._plain_object(parent_type, source_value, grouped_field_set)
            except Exception:  # noqa: S110 - _NotPlain, or an error graphql-core will report
                pass
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def _plain_object(
        self, parent_type: GraphQLObjectType, source: Any, grouped_field_set: Any
    ) -> dict[str, Any]:
        get_field = self.schema.get_field
        results: dict[str, Any] = {}
        for response_name, field_details_list in grouped_field_set.items():
            node = field_details_list[0].node
            name = node.name.value
            if name == _TYPENAME:
                results[response_name] = parent_type.name
                continue
            field_def = get_field(parent_type, name)
            resolve = field_def.resolve if field_def is not None else None
            if (
                resolve is None
                or not getattr(resolve, "_is_default", False)
                or field_def.args  # type: ignore[union-attr]
                or node.arguments
            ):
                raise _NotPlain
            results[response_name] = self._plain_value(
                field_def.type,  # type: ignore[union-attr]
                field_details_list,
                resolve(source),
            )
        return results

    def _plain_value(
        self, return_type: GraphQLOutputType, field_details_list: Any, value: Any
    ) -> Any:
        if isinstance(return_type, GraphQLNonNull):
            if value is None:
                raise _NotPlain  # graphql-core raises the non-null error
            return_type = return_type.of_type
        elif value is None:
            return None
        if isinstance(value, Exception) or self.is_awaitable(value):
            raise _NotPlain
        if isinstance(return_type, _LEAF_TYPES):
            coerced = return_type.coerce_output_value(value)
            if coerced is None or coerced is Undefined:
                raise _NotPlain
            return coerced
        if isinstance(return_type, GraphQLList):
            if isinstance(value, _NOT_LISTS) or not isinstance(value, Iterable):
                raise _NotPlain
            item_type = return_type.of_type
            return [self._plain_value(item_type, field_details_list, item) for item in value]
        if isinstance(return_type, GraphQLObjectType) and not return_type.is_type_of:
            grouped_field_set, new_defer_usages, _ = self.collect_subfields(
                return_type, field_details_list
            )
            if new_defer_usages:
                raise _NotPlain
            return self._plain_object(return_type, value, grouped_field_set)
        raise _NotPlain  # interfaces and unions, or an is_type_of check
