"""Request and response bodies of REST v1, apart from the storage tables (XCreate / XPublic).

One module per resource (``health``, ``accounts``, ``devices``, ``programs``, ``sessions``,
``stats``), all made of the strict ``Input`` base and the checked field types of ``fields``.
Inputs forbid unknown fields and do not coerce types; outputs list every field the server sends,
so the OpenAPI schema is the contract a phone app can be generated from. Times are ISO 8601 in
UTC; currents in µA; durations in seconds.

This package holds no route and no storage model, and re-exports nothing: import a body from
its resource module.
"""
