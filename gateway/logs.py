"""Logging set-up: plain or JSON lines, the current request id on every record, secrets redacted.

The API sets ``request_id`` (a context variable) per request; every record logged while handling
that request carries it. Secrets never reach a log: tokens are hashed before they are stored, the
API logs routes, not headers, and ``RedactSecrets`` (installed on the handler by
``configure_logging``) is the last line of defence for what is logged anyway:

* the values of sensitive query parameters (``token``, ``access_token``, ``code``, ``key``,
  ``password``, matched case-insensitively and after percent-decoding the name) in any request
  line, which uvicorn's access and WebSocket log lines print with the query string (a client
  that puts its token in ``?token=``, refused by the API, must not leave it in the log). In
  access records the redaction happens inside ``record.args``, so the record keeps its shape;
* anything that looks like an mcgw token (``mcgw_`` and URL-safe base64 with a capital or a
  digit), whole or in part, in any record's message or exception text.

It does not scrub other secrets (the database password is never logged: URLs are rendered with
``hide_password``), and it does not touch records that reach handlers other than the one
installed here.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from urllib.parse import unquote_plus

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

SENSITIVE_QUERY_PARAMETERS = frozenset({"token", "access_token", "code", "key", "password"})
REDACTED = "***"
_QUERY = re.compile(r"\?([^\s\"'#]*)")
"""A query string inside a log line: from ``?`` to the next space, quote or fragment."""
_TOKEN = re.compile(r"mcgw_(?=[A-Za-z0-9_-]*[A-Z0-9-])[A-Za-z0-9_-]+")
"""An mcgw token or a piece of one. Requiring a capital, a digit or ``-`` spares the project's
lower-case identifiers (``mcgw_telemetry_frames_in``); a real token has ~43 random characters."""


def redact(text: str) -> str:
    """``text`` with sensitive query values and anything token-like replaced by ``***``."""
    return _TOKEN.sub(f"mcgw_{REDACTED}", _QUERY.sub(_redact_query, text))


def _redact_query(match: re.Match[str]) -> str:
    pairs = match.group(1).split("&")
    for index, pair in enumerate(pairs):
        name, equals, _value = pair.partition("=")
        if equals and unquote_plus(name).strip().lower() in SENSITIVE_QUERY_PARAMETERS:
            pairs[index] = f"{name}={REDACTED}"
    return "?" + "&".join(pairs)


class RedactSecrets(logging.Filter):
    """Redacts tokens and sensitive query values before a record is formatted (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # '%s - "%s %s HTTP/%s" %d': redact inside the arguments, keep the record's shape.
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is redacted once here.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, level: str = "INFO", json_format: bool = False) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(RedactSecrets())
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every migration step at INFO; the gateway logs the outcome itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
