"""Reminders through apprise: one notification per due session, to the URLs the hub is given.

Off by default: with no ``reminders.apprise_urls`` nothing here is built and apprise is never
imported (it costs memory on a Pi). With URLs, apprise is imported the first time a reminder
is sent, and every URL gets every reminder (any apprise service: ``ntfy://``, ``mailto://``,
``tgram://``, ``json://host/path``...). The person's quiet hours are the planner's business:
it never asks for a reminder inside them.

Sending runs in a worker thread under a timeout (``reminders.timeout_s``) so it never blocks
the event loop; a failure or a timeout is logged once per reminder and counted (``failed``),
never raised. A timed-out send may still finish in its thread; its result is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from gateway.plans.planner import Reminder

log = logging.getLogger(__name__)

TITLE = "mcgw: a session is due"


class AppriseReminders:
    """Sends ``Reminder``s to apprise URLs. ``sent`` and ``failed`` count outcomes."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float) -> None:
        self._urls = list(urls)
        self._timeout_s = timeout_s
        self._apprise: Any = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def _client(self) -> Any:
        with self._lock:  # one thread builds it; later sends reuse it
            if self._apprise is None:
                import apprise  # imported only when reminders are configured (memory)

                client = apprise.Apprise()
                for url in self._urls:
                    if not client.add(url):
                        log.warning("reminders: apprise refused a URL (check its scheme)")
                self._apprise = client
            return self._apprise

    def _notify(self, title: str, body: str) -> bool:
        return bool(self._client().notify(title=title, body=body))

    async def send(self, reminder: Reminder) -> None:
        body = f"{reminder.plan_name}: your session for {reminder.local} is due."
        try:
            async with asyncio.timeout(self._timeout_s):
                ok = await asyncio.to_thread(self._notify, TITLE, body)
        except TimeoutError:
            ok = False
            log.warning(
                "reminders: no answer within %.0f s (user %d)", self._timeout_s, reminder.user_id
            )
        except Exception:
            ok = False
            log.warning("reminders: sending failed (user %d)", reminder.user_id, exc_info=True)
        else:
            if not ok:
                log.warning("reminders: apprise reported a failure (user %d)", reminder.user_id)
        if ok:
            self.sent += 1
        else:
            self.failed += 1
