"""How to reach the broker: an ``aiomqtt.Client`` from ``MqttSettings`` (URL, TLS, will).

``mqtt://[user:password@]host[:port]`` (default port 1883) or ``mqtts://`` (TLS, default port
8883, with ``tls_ca_file`` and an optional client certificate ``tls_cert_file`` /
``tls_key_file``). User and password may be percent-encoded. The bridge and the fleet reader
both build their clients here; this module connects nothing itself.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import unquote, urlsplit

import aiomqtt

from gateway.config import MqttSettings

log = logging.getLogger(__name__)
"""paho's own log lines go here too (aiomqtt passes them on)."""

CONNECT_TIMEOUT_S = 5.0


def broker_address(settings: MqttSettings) -> str:
    """``host:port`` of the broker, for logs and messages (never the password)."""
    parts = urlsplit(settings.url or "")
    return f"{parts.hostname}:{parts.port or _default_port(parts.scheme)}"


def _default_port(scheme: str) -> int:
    return 8883 if scheme == "mqtts" else 1883


def make_client(
    settings: MqttSettings, *, identifier: str, will: aiomqtt.Will | None = None
) -> aiomqtt.Client:
    """A client for the broker ``settings.url`` names (not connected yet)."""
    parts = urlsplit(settings.url or "")
    tls = None
    if parts.scheme == "mqtts":
        tls = aiomqtt.TLSParameters(
            ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file else None,
            certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        )
    return aiomqtt.Client(
        parts.hostname or "localhost",
        parts.port or _default_port(parts.scheme),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        identifier=identifier,
        will=will,
        keepalive=settings.keepalive_s,
        timeout=CONNECT_TIMEOUT_S,
        tls_params=tls,
        logger=log,
        # Small messages back to back (a state, the hub summary, an event) must not wait for
        # the previous one's TCP ACK (Nagle with delayed ACKs: up to 40 ms on Linux).
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
