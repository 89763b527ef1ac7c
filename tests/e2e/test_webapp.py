"""The hub's web page in a real browser (Chromium through Playwright) against a real
`mcgw serve --ble sim:2` process, its simulated devices driven through their control endpoint.

One hub and one browser for the module; each test is its own person (a browser context of its
own, paired with its own code), so the tests do not depend on each other's order. Every screen
a test reaches is checked with axe-core (no serious or critical violation), every page is
watched for script errors and Content Security Policy violations, and every request the page
makes must go to the hub itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.browser import DESKTOP, PHONE, axe_violations, chromium
from tests.e2e.served import ServedHub, base_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

XSS_NAME = '<img src=x onerror="window.pwned=1">Ana\'s toner'


@dataclass
class Hub:
    served: ServedHub
    control_port: int

    @property
    def base_url(self) -> str:
        return self.served.base_url

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.served.admin_token}"},
            timeout=20,
        )

    def pairing_code(self, name: str, *, admin: bool = False) -> str:
        with self.admin() as client:
            made = client.post("/api/v1/pairing-codes", json={"name": name, "is_admin": admin})
        assert made.status_code == 201, made.text
        code: str = made.json()["code"]
        return code

    def device(self, index: int) -> dict[str, Any]:
        with self.admin() as client:
            devices = client.get("/api/v1/devices").json()
        found: dict[str, Any] = sorted(devices, key=lambda d: d["address"])[index]
        return found

    def set_on_skin(self, address: str, on_skin: bool) -> None:
        self.scenario(address, "set_on_skin", on_skin=on_skin)

    def scenario(self, address: str, action: str, **args: Any) -> None:
        """One action of the simulated device's control endpoint (``ble.sim.control``)."""
        reply = httpx.post(
            f"http://127.0.0.1:{self.control_port}/devices/{address}/{action}",
            json=args,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp_path: Path = tmp_path_factory.mktemp("webapp")
    control_port = free_port()
    env = base_env(tmp_path, MCGW_BLE__SIM_CONTROL_PORT=str(control_port))
    with ServedHub.start(env, devices=2) as served:
        yield Hub(served, control_port)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@dataclass
class Phone:
    """One person's browser: a context, its page, and what went wrong in it."""

    context: Any
    page: Any
    hub: Hub
    problems: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    inaccessible: dict[str, list[str]] = field(default_factory=dict)

    def check_a11y(self, screen: str) -> None:
        self.page.locator("main").get_by_role("heading", level=1).first.wait_for()
        found = axe_violations(self.page)
        if found:
            self.inaccessible[screen] = found

    def close(self) -> None:
        self.context.close()
        assert self.inaccessible == {}, "\n".join(
            f"{screen}: {line}" for screen, lines in self.inaccessible.items() for line in lines
        )
        assert self.problems == [], self.problems
        assert self.foreign == [], f"requests that left the hub: {self.foreign}"


def open_phone(browser: Any, hub: Hub, viewport: dict[str, int]) -> Phone:
    context = browser.new_context(viewport=viewport, base_url=hub.base_url)
    page = context.new_page()
    phone = Phone(context, page, hub)
    origin = hub.base_url
    ws_origin = origin.replace("http://", "ws://")

    def console(message: Any) -> None:
        # Chromium logs every 4xx answer; the page expects two: /api/v1/me before pairing
        # (401), and a program draft the hub refuses while it is typed (422).
        expected = ("status of 401", "status of 422")
        if message.type == "error" and not any(text in message.text for text in expected):
            phone.problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: phone.problems.append(str(error)))
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((origin, ws_origin, "data:"))
            else phone.foreign.append(request.url)
        ),
    )
    return phone


def pair(phone: Phone, name: str, *, admin: bool = False, by_link: bool) -> None:
    """Pair with a fresh code (typed in, or through the pairing link) and accept the notice."""
    from playwright.sync_api import expect

    page = phone.page
    code = phone.hub.pairing_code(name, admin=admin)
    if by_link:
        page.goto(f"/#/pair/{code}")
    else:
        page.goto("/#/pair")
        phone.check_a11y("pair")
        page.get_by_label("Pairing code").fill(code)
        page.get_by_role("button", name="Pair").click()
    expect(page).to_have_url(re.compile(r"#/consent$"))
    assert code not in page.url  # the code left the address bar
    phone.check_a11y("consent")
    page.get_by_label("I have read the notice").check()
    page.get_by_role("button", name="I accept").click()
    expect(page).to_have_url(re.compile(r"#/devices$"))


def assert_token_unreadable(page: Any) -> None:
    """The credential is an HttpOnly cookie: no script on the page can read it."""
    cookies = page.context.cookies()
    token = next(c for c in cookies if c["name"] == "mcgw_token")
    assert token["httpOnly"] is True
    assert token["sameSite"] == "Strict"
    assert "mcgw_token" not in page.evaluate("document.cookie")
    stored = page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
    assert "mcgw_" not in stored


def trace_pixels(page: Any) -> str:
    data: str = page.locator("canvas.trace").evaluate("c => c.toDataURL()")
    return data


def run_session(phone: Phone, device: dict[str, Any]) -> None:
    """Claim the device, start Quick lift, watch it live, lose and regain skin contact."""
    from playwright.sync_api import expect

    page = phone.page
    card = page.locator("li.device", has_text=device["address"])
    card.get_by_role("button", name=f"Claim {device['name']}").click()
    card.get_by_role("link", name="Start a program").click()
    expect(page).to_have_url(re.compile(r"#/programs/"))
    page.get_by_role("button", name="Start Quick lift").click()
    expect(page).to_have_url(re.compile(r"#/live/[0-9a-f-]+$"))
    state = page.locator("p.state")
    expect(state).to_contain_text("running")
    # Live data: the current rises off zero and the trace keeps moving.
    expect(page.locator("output.big").nth(1)).not_to_have_text(re.compile(r"^(0)?$"))
    before = trace_pixels(page)
    page.wait_for_timeout(400)
    assert trace_pixels(page) != before
    expect(page.locator(".cue")).to_contain_text("Move", timeout=12_000)
    expect(page.locator("svg.face .zone.active")).to_have_count(1)
    phone.check_a11y("live")
    # Skin contact lost: the session pauses and the page asks for gel; back on the skin, it
    # resumes by itself.
    phone.hub.set_on_skin(device["address"], False)
    expect(state).to_contain_text("paused", timeout=10_000)
    expect(page.locator(".gel-hint")).to_contain_text("gel")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    phone.hub.set_on_skin(device["address"], True)
    expect(state).to_contain_text("running", timeout=15_000)
    expect(page.get_by_role("button", name="Intensity up")).to_be_enabled()
    expect(page.get_by_role("button", name="Intensity down")).to_be_enabled()
    expect(page.get_by_role("button", name="Pause")).to_be_enabled()


def find_in_history(phone: Phone) -> None:
    from playwright.sync_api import expect

    page = phone.page
    page.get_by_role("navigation").get_by_role("link", name="History").click()
    row = page.locator("table.sessions tbody tr").first
    expect(row).to_contain_text("quick-lift")
    expect(row).to_contain_text("stopped")
    expect(page.locator("table.dose tbody tr")).not_to_have_count(0)
    phone.check_a11y("history")
    csv = page.request.get(row.get_by_role("link", name=re.compile("^CSV")).get_attribute("href"))
    assert csv.status == 200
    assert csv.headers["content-type"].startswith("text/csv")


def test_on_a_phone_pair_consent_start_watch_lose_contact_stop_and_find_it(
    hub: Hub, browser: Any
) -> None:
    from playwright.sync_api import expect

    phone = open_phone(browser, hub, PHONE)
    page = phone.page
    pair(phone, "ana", by_link=False)
    assert_token_unreadable(page)
    phone.check_a11y("devices")
    device = hub.device(0)
    run_session(phone, device)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("main")).to_contain_text("Session stopped")
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    find_in_history(phone)

    # Names are shown as text: markup in a device name stays inert.
    page.get_by_role("navigation").get_by_role("link", name="Devices").click()
    card = page.locator("li.device", has_text=device["address"])
    card.get_by_role("button", name=re.compile("^Rename")).click()
    card.get_by_label("New name").fill(XSS_NAME)
    card.get_by_role("button", name="Save").click()
    expect(page.locator("li.device h2", has_text=XSS_NAME)).to_have_count(1)
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("li.device img").count() == 0

    # A custom program is checked against the caps as it is typed; the hub's reason is
    # shown next to the field.
    page.get_by_role("navigation").get_by_role("link", name="Programs").click()
    builder = page.locator("form.builder")
    builder.get_by_label("Zone").select_option("eye_area")
    builder.get_by_label("Amplitude (µA)").fill("300")
    amplitude = builder.get_by_label("Amplitude (µA)")
    expect(amplitude).to_have_attribute("aria-invalid", "true")
    reason = page.locator("#" + (amplitude.get_attribute("aria-describedby") or ""))
    expect(reason).to_contain_text("eye_area cap of 200")
    amplitude.fill("150")
    expect(amplitude).not_to_have_attribute("aria-invalid", "true")
    phone.check_a11y("programs")

    page.get_by_role("navigation").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("list", name="Your phones and tokens")).to_contain_text("browser")
    phone.check_a11y("settings")
    with page.expect_response("**/api/v1/me/sign-out") as signed_out:
        page.get_by_role("button", name="Sign out").click()
    assert signed_out.value.status == 204
    expect(page).to_have_url(re.compile(r"#/pair$"))
    assert all(c["name"] != "mcgw_token" for c in page.context.cookies())
    assert page.request.get("/api/v1/me").status == 401
    phone.close()


class SocketRoute:
    """Routes the page's WebSocket through the test: records every telemetry frame the hub
    sends, and can cut the connection and refuse new ones until ``restore()``."""

    def __init__(self) -> None:
        self.blocked = False
        self.open: list[tuple[Any, Any, list[bool]]] = []
        self.seqs: list[int] = []
        self.gaps: list[dict[str, Any]] = []

    def __call__(self, ws: Any) -> None:
        if self.blocked:
            ws.close()
            return
        server = ws.connect_to_server()
        alive = [True]

        def from_server(message: str | bytes) -> None:
            if not alive[0]:
                return
            parsed = orjson.loads(message)
            if parsed["type"] == "telemetry":
                self.seqs.append(parsed["seq"])
            elif parsed["type"] in ("gap", "dropped"):
                self.gaps.append(parsed)
            ws.send(message)

        server.on_message(from_server)
        ws.on_message(lambda message: server.send(message))
        self.open.append((ws, server, alive))

    def cut(self) -> None:
        self.blocked = True
        for ws, server, alive in self.open:
            alive[0] = False
            ws.close()
            server.close()
        self.open.clear()

    def restore(self) -> None:
        self.blocked = False


def test_on_a_desktop_the_page_resumes_after_a_cut_and_stops_without_the_socket(
    hub: Hub, browser: Any
) -> None:
    from playwright.sync_api import expect

    phone = open_phone(browser, hub, DESKTOP)
    page = phone.page
    route = SocketRoute()
    page.route_web_socket(re.compile(r"/api/v1/ws$"), route)
    pair(phone, "bea", by_link=True)
    device = hub.device(1)
    run_session(phone, device)
    banner = page.get_by_role("alert").filter(has_text="Not connected")

    # Cut the socket for a while: the banner shows; restored, the page resumes from the frame
    # after the last one it had (from_seq), so not one frame is missing or repeated.
    seen = len(route.seqs)
    route.cut()
    expect(banner).to_be_visible()
    page.wait_for_timeout(1500)  # frames keep coming on the hub meanwhile
    route.restore()
    expect(banner).to_be_hidden(timeout=15_000)
    wanted = seen + 200  # the replay and a second of live frames after it
    for _ in range(100):
        if len(route.seqs) > wanted:
            break
        page.wait_for_timeout(100)  # the route's handlers run while the page is waited on
    seqs = route.seqs
    assert len(seqs) > wanted
    assert len(set(seqs)) == len(seqs), "a frame was delivered twice"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "frames are missing"
    assert route.gaps == []
    expect(page.locator("p.state")).to_contain_text("running")

    # With the socket down again, Stop still stops (over REST).
    route.cut()
    expect(banner).to_be_visible()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("main")).to_contain_text("Session stopped")
    route.restore()
    expect(banner).to_be_hidden(timeout=15_000)
    find_in_history(phone)
    phone.close()


def check_radio_panel(admin: Phone) -> None:
    """The Admin screen's Bluetooth panel shows the radio and each device's link, and keeps
    them fresh while it is open: a link dropped by the device shows up as a reconnect."""
    from playwright.sync_api import expect

    page = admin.page
    expect(page.get_by_role("heading", name="Bluetooth radios")).to_be_visible()
    radio = page.get_by_role("region", name="Radios").locator("tr[data-radio='radio0']")
    for text in ("sim:2", "up", "2 used, 5 free"):
        expect(radio).to_contain_text(text)
    address = admin.hub.device(1)["address"]
    link = page.get_by_role("region", name="Device links").locator(f"tr[data-address='{address}']")
    expect(link).to_contain_text("radio0")
    expect(link).to_contain_text("dBm")
    reconnects = link.locator("td.reconnects")
    before = int(reconnects.inner_text())
    admin.hub.scenario(address, "drop_link")
    expect(reconnects).to_have_text(str(before + 1), timeout=15_000)
    expect(link).to_contain_text("bonded", timeout=15_000)


def test_an_admin_and_a_user_see_different_menus(hub: Hub, browser: Any) -> None:
    from playwright.sync_api import expect

    admin = open_phone(browser, hub, PHONE)
    pair(admin, "root", admin=True, by_link=True)
    nav = admin.page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Admin")).to_be_visible()
    nav.get_by_role("link", name="Admin").click()
    page = admin.page
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    expect(page.get_by_role("heading", name="Hub settings (read-only)")).to_be_visible()
    expect(page.locator("pre.settings")).to_contain_text('"hub_cap_ua": 400')
    check_radio_panel(admin)
    page.get_by_label("Name of the new user").fill("cleo")
    page.get_by_role("button", name="Make a pairing code").click()
    expect(page.locator("p.code")).to_have_text(re.compile(r"^\d{6}$"))
    admin.check_a11y("admin")
    admin.close()

    user = open_phone(browser, hub, PHONE)
    pair(user, "dan", by_link=True)
    nav = user.page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Devices")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    user.page.goto("/#/admin")
    expect(user.page.locator("main")).to_contain_text("for the hub's admins")
    user.page.goto("/#/live")
    expect(user.page.locator("main")).to_contain_text("No session is running")
    user.check_a11y("live (idle)")
    user.close()
