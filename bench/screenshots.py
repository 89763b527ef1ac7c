"""Screenshots of the web page's main screens at phone size, for README.md (docs/img/app-*.png).

``python bench/screenshots.py`` starts ``mcgw serve --ble sim:2`` on a free port with a fresh
database (bench/webapp.py's ``Hub``), pairs Chromium (390x844) as an admin, claims a device,
runs a few seconds of Quick lift and stops it, and writes one PNG per screen, plus one of the
Admin screen's Bluetooth radios panel. Run it again after changing the page; the images are
committed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import ROOT
from webapp import CHROMIUM, CHROMIUM_ARGS, PHONE, Hub

OUT = ROOT / "docs" / "img"


def shoot(out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        hub = Hub(tmp)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport=PHONE, base_url=hub.base_url, device_scale_factor=1
            )
            page = context.new_page()

            def save(name: str) -> None:
                page.wait_for_timeout(300)
                path = out / f"app-{name}.png"
                page.screenshot(path=str(path))
                written.append(path)

            page.goto("/#/pair")
            page.get_by_label("Pairing code").fill(hub.code())
            save("pair")
            page.get_by_role("button", name="Pair").click()
            page.wait_for_url("**/#/consent")
            save("consent")
            page.get_by_label("I have read the notice").check()
            page.get_by_role("button", name="I accept").click()
            page.locator("main li.device").first.wait_for()
            page.get_by_role("button", name="Claim MC-SIM-1").click()
            expect(page.get_by_role("link", name="Start a program")).to_be_visible()
            save("devices")
            page.get_by_role("link", name="Start a program").click()
            page.get_by_role("button", name="Start Quick lift").wait_for()
            save("programs")
            page.get_by_role("button", name="Start Quick lift").click()
            page.wait_for_url("**/#/live/**")
            expect(page.locator(".cue")).to_contain_text("Move", timeout=12_000)
            save("live")
            time.sleep(1)
            page.get_by_role("button", name="Stop").click()
            expect(page.locator("main")).to_contain_text("Session stopped")
            page.goto("/#/history")
            page.locator("table.sessions").wait_for()
            save("history")
            page.goto("/#/settings")
            page.get_by_role("button", name="Sign out").wait_for()
            save("settings")
            page.goto("/#/admin")
            page.get_by_role("heading", name="Users").wait_for()
            save("admin")
            panel = page.get_by_role("heading", name="Bluetooth radios")
            panel.scroll_into_view_if_needed()
            page.locator("tr[data-radio]").first.wait_for()
            save("radios")
            context.close()
        finally:
            browser.close()
            hub.close()
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    for path in shoot(parser.parse_args().out):
        print(path.relative_to(ROOT))
