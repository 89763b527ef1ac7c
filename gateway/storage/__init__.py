"""Storage: everything the hub records, on SQLite (default) or a shared PostgreSQL.

Modules, one concept each:

* ``engine``: build the engine from ``DatabaseSettings``; ``upgrade`` runs the migrations.
* ``models``: the SQLModel tables. ``samples``: the packed telemetry layout, downsampling, CSV.
* ``writer``: ``StorageWriter``, the one thread that performs a running hub's writes, batched.
* ``repo``: users, tokens, consent, devices, programs. ``session_log``: sessions and events.
* ``history``: paged session lists, telemetry export, streaks, weekly minutes.
* ``retention``: pruning raw telemetry.

Importing this package builds nothing: no engine, no thread, no global state (docs/storage.md).
"""
