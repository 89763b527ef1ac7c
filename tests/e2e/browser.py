"""A real browser for end-to-end tests: Playwright for Python driving Debian's Chromium.

Playwright cannot download its own browser here, so it drives the system's Chromium
(``/usr/bin/chromium``, installed by ``.ci/run`` with apt-get when missing). Without it, or
without Playwright, a test calls ``unavailable``: a failure with CI=true, a skip on a laptop.

``axe_violations`` runs axe-core (vendored in tests/e2e/axe, never served by the hub) in the page
and returns the serious and critical violations, each as one readable line. It is evaluated
through the DevTools protocol, which the page's Content Security Policy does not govern, so
the policy stays on while the page is checked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import unavailable

CHROMIUM = os.environ.get("MCGW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
AXE = Path(__file__).parent / "axe" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed at the end."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev install has it
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page: Any) -> list[str]:
    """Serious and critical accessibility violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        f"{v['impact']}: {v['id']} ({v['help']}) at "
        + ", ".join(str(node["target"]) for node in v["nodes"][:3])
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
