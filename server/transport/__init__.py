"""The GraphQL transport: how documents arrive and answers leave.

`view` (HTTP and the websocket upgrade), `websocket` (the two subscription protocols),
`live` (one execution per event shared by every subscriber of a document), `execution`
(graphql-core's executor without the per-field overhead), `cache` (whole responses, by
scope generation) and `documents` (parsed and validated documents, kept). The schema
itself, its types and roots, lives in schema/; server/assembly.py puts the two together.
"""
