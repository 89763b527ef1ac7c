"""``python -m gateway.storage.migrate``: migrate one database and exit.

The hub runs this in a child process when its database is behind (``engine.upgrade_apart``),
so Alembic is imported there and never stays resident in the hub. The database settings come
as JSON on stdin (a URL may carry a password: it is kept off the command line). On failure the
last line of stderr says why; the exit status is 1.
"""

from __future__ import annotations

import sys

from gateway.config import DatabaseSettings
from gateway.errors import StorageUnavailable
from gateway.storage.engine import create_engine_from_settings, upgrade


def main() -> int:
    settings = DatabaseSettings.model_validate_json(sys.stdin.read())
    engine = create_engine_from_settings(settings)
    try:
        upgrade(engine)
    except StorageUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
