"""The GraphQL schema: types, inputs, the Query, Mutation and Subscription roots, the
document limits and error codes. Thin glue to resolvers/.

The schema is assembled with its execution and document policies in server/assembly.py
(`build_schema`), beside the transport that serves it (server/transport/).
"""
