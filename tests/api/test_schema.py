"""The OpenAPI document is the whole contract, and the running hub keeps it.

Static (no server): every operation has a description, an example for each JSON body it takes
or answers with, and the error statuses it can answer; every example validates against its own
schema and every link names a real operation; /docs is Swagger UI served by the hub itself under
a strict CSP; a 405 names every method of the path in ``Allow``; a time in a query is ISO 8601.

Dynamic: schemathesis runs against a real hub (uvicorn, two simulated devices, SQLite) as
``schemathesis run --checks all`` does (schemathesis' own engine, every check, a response-time
bound): the examples, coverage and fuzzing phases (positive and negative data) over every
operation, then, on a fresh hub, the stateful phase over the document's links (claim a device,
start a session on it, then read, pause, resume, stop it; create a program, then replace or
delete it). It calls as alice, or as an admin where she is refused, and replays alice's reads as
bob, who must never get them (object_level_authorization). Any finding fails the test, except
the false positives of a generic check that ``_excused`` names one by one, each with its reason.
Bounded: ten examples per operation, a fixed seed, 30 stateful scenarios of at most 10 steps
(about half a minute on 2 cores). The numbers of operations and cases are printed and recorded
as properties of the test (junit XML).

Schemathesis is synchronous (requests), so the hub runs on its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson
import pytest
import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure
from schemathesis.engine import events, from_schema

from api.app import create_app
from api.docs import STATIC_DIR
from ble.sim.fleet import sim_address
from tests.api.hub import Hub, make_settings, serve

MAX_EXAMPLES = 10
STATEFUL_MAX_STEPS = 10
STATEFUL_SCENARIOS = 30
SEED = 20261130
MAX_RESPONSE_S = 10.0
RESCAN_S = 0.3
CONNECT_WAIT_S = 5.0
SKIPPED = ("/api/v1/devices/scan", "/api/v1/me/sign-out")
"""Each scan holds the radio for its timeout_s (up to 10 s); tests/api/test_flow.py scans.
Signing out revokes the identity's own token, leaving it only 401s for the rest
(tests/api/test_webapp_auth.py signs out)."""


# --- the document, statically --------------------------------------------------------------------

DECLARED: dict[str, set[str]] = {
    # Statuses beyond the standard ones that a route can answer (from its handler and the
    # gateway calls it makes: Conflict, DeviceUnavailable, SafetyViolation are 409).
    "POST /api/v1/pair": {"201", "400", "403", "429"},
    "POST /api/v1/pairing-codes": {"201"},
    "POST /api/v1/me/sign-out": {"204"},
    "POST /api/v1/me/consent": {"409"},
    "PATCH /api/v1/users/{user_id}": {"409"},
    "POST /api/v1/devices/{address}/claim": {"409"},
    "PUT /api/v1/devices/{address}/owner": {"409"},
    "DELETE /api/v1/devices/{address}": {"204", "409"},
    "POST /api/v1/programs": {"201", "409"},
    "PUT /api/v1/programs/{slug}": {"409"},
    "DELETE /api/v1/programs/{slug}": {"204", "409"},
    "POST /api/v1/plans": {"201"},
    "DELETE /api/v1/plans/{plan_id}": {"204"},
    "POST /api/v1/sessions": {"200", "201", "403", "409"},
    "POST /api/v1/sessions/{session_id}/pause": {"409"},
    "POST /api/v1/sessions/{session_id}/resume": {"409"},
    "PUT /api/v1/sessions/{session_id}/level": {"409"},
    "DELETE /api/v1/tokens/{token_id}": {"204"},
    "POST /api/v1/tokens": {"201"},
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(make_settings(tmp_path_factory.mktemp("openapi")))
    return app.openapi()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_has_a_description_an_example_and_its_statuses(
    document: dict[str, Any],
) -> None:
    missing: list[str] = []
    for label, operation in _operations(document):
        responses = operation["responses"]
        if not operation.get("description", "").strip():
            missing.append(f"{label}: no description")
        success = [code for code in responses if code.startswith("2")]
        if not success:
            missing.append(f"{label}: no success response")
        for code in success:
            for media_type, media in responses[code].get("content", {}).items():
                if "example" not in media and "examples" not in media:
                    missing.append(f"{label}: no example for {code} {media_type}")
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            if "example" not in media and "examples" not in media:
                missing.append(f"{label}: no example for its {media_type} body")
        wanted = {"404", "422", "503"} | DECLARED.get(label, set())
        if operation.get("security"):
            wanted |= {"401", "403"}
        if operation.get("requestBody"):
            wanted |= {"400", "413"}
        for code in sorted(wanted - set(responses)):
            missing.append(f"{label}: {code} not documented")
        for code, response in responses.items():
            if code[0] in "45" and "application/problem+json" not in response.get("content", {}):
                missing.append(f"{label}: {code} is not a problem+json")
        if "401" in responses and "WWW-Authenticate" not in responses["401"].get("headers", {}):
            missing.append(f"{label}: 401 without its WWW-Authenticate header")
        if "429" in responses and "Retry-After" not in responses["429"].get("headers", {}):
            missing.append(f"{label}: 429 without its Retry-After header")
    assert not missing, "\n".join(missing)
    public = {"GET /api/v1/health", "GET /api/v1/health/ready", "POST /api/v1/pair", "GET /metrics"}
    secured = {label for label, op in _operations(document) if op.get("security")}
    assert secured == {label for label, _ in _operations(document)} - public
    assert not [path for path in document["paths"] if path.startswith(("/docs", "/static"))]


def test_every_example_matches_its_schema_and_every_link_its_target(
    document: dict[str, Any],
) -> None:
    components = document["components"]
    checked = 0

    def check(where: str, schema: dict[str, Any], example: Any) -> None:
        nonlocal checked
        validator = Draft202012Validator(
            {**schema, "components": components}, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(example)]
        assert not errors, "\n".join(errors)
        checked += 1

    for name, schema in components["schemas"].items():
        for example in schema.get("examples", []):
            check(f"components.{name}", schema, example)
    operation_ids = {op["operationId"] for _, op in _operations(document)}
    for label, operation in _operations(document):
        bodies = {"request": operation.get("requestBody", {})} | operation["responses"]
        for code, body in bodies.items():
            for media_type, media in body.get("content", {}).items():
                if "example" in media and "schema" in media:
                    check(f"{label} {code} {media_type}", media["schema"], media["example"])
            for name, link in body.get("links", {}).items():
                assert link["operationId"] in operation_ids, f"{label} link {name}"
    assert checked > 40


async def test_405_names_every_method_of_the_path(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))  # routing answers 405: no runtime needed
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        for method, path, allowed in (
            ("PUT", "/api/v1/devices/C0:4D:43:00:00:00", "GET, PATCH, DELETE"),
            ("OPTIONS", "/api/v1/devices/C0:4D:43:00:00:00", "GET, PATCH, DELETE"),
            ("PATCH", "/api/v1/sessions", "GET, POST"),
            ("PUT", "/api/v1/devices/scan", "POST"),  # the concrete path, not {address}
            ("PUT", "/api/v1/me/consent", "POST, DELETE"),
            ("POST", "/api/v1/programs/quick-lift", "GET, PUT, DELETE"),
            ("DELETE", "/api/v1/health", "GET"),
            ("POST", "/docs", "GET"),
            ("POST", "/static/swagger/swagger-ui.css", "GET, HEAD"),
        ):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allowed, (method, path)
            assert response.headers["content-type"] == "application/problem+json"


class _Page(HTMLParser):
    """The URLs a page loads and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.urls += [value for key, value in attrs if key in ("src", "href") and value]
        self._in_script = tag == "script" and "src" not in named
        if tag == "style" or "style" in named:
            self.inline_scripts.append(f"<{tag} style>")  # CSP: no inline style of ours either

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


async def test_docs_page_loads_everything_from_the_hub_under_a_strict_csp(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = {
            directive.split()[0]: directive.split()[1:]
            for directive in page.headers["content-security-policy"].split("; ")
        }
        assert csp["default-src"] == ["'self'"]
        assert csp["script-src"] == ["'self'"]
        assert csp["img-src"] == ["'self'", "data:"]
        assert "cdn" not in page.text
        parsed = _Page()
        parsed.feed(page.text)
        assert not parsed.inline_scripts, parsed.inline_scripts
        wanted = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        loaded = set()
        for url in parsed.urls:
            absolute = urljoin(str(page.url), url)
            assert urlsplit(absolute).netloc == "hub", f"{url} is not served by the hub"
            response = await client.get(absolute)
            assert response.status_code == 200, url
            suffix = Path(urlsplit(absolute).path).suffix
            assert response.headers["content-type"].startswith(wanted[suffix]), url
            loaded.add(Path(urlsplit(absolute).path).name)
        assert {"swagger-ui-bundle.js", "swagger-init.js", "swagger-ui.css"} <= loaded
        init = await client.get("/static/swagger/swagger-init.js")
        assert '"openapi.json"' not in init.text  # the page says where, the script does not
        assert "validatorUrl: null" in init.text  # no badge from validator.swagger.io
        assert 'data-openapi-url="openapi.json"' in page.text
        assert (await client.get("/openapi.json")).status_code == 200
        for gone in ("/redoc", "/docs/oauth2-redirect"):
            assert (await client.get(gone)).status_code == 404
    licence = (STATIC_DIR / "swagger" / "LICENSE").read_text()
    assert "Apache License" in licence


async def test_times_in_a_query_are_iso_8601_only(hub: Hub) -> None:
    _, token = await hub.user("ana")
    phone = hub.client(token)
    for query, field_name in (
        ("until=0.5", "query.until"),  # pydantic alone: half a second after 1970
        ("since=1796025600", "query.since"),
        ("since=2026-11-30", "query.since"),  # a bare date: which midnight?
        ("until=yesterday", "query.until"),
    ):
        response = await phone.get(f"/api/v1/sessions?{query}")
        assert response.status_code == 422, query
        assert response.json()["errors"][0]["field"] == field_name, query
    for query in (
        "since=2026-11-30T08:00:00Z",
        "since=2026-11-30T08:00:00.250%2B01:00",
        "until=2026-11-30T08:00",  # no zone: UTC
    ):
        response = await phone.get(f"/api/v1/sessions?{query}")
        assert response.status_code == 200, (query, response.text)


@contextlib.contextmanager
def hub_in_thread(tmp_path: Path) -> Iterator[tuple[Hub, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    ready: concurrent.futures.Future[tuple[Hub, asyncio.Event]] = concurrent.futures.Future()

    async def main() -> None:
        try:
            async with serve(make_settings(tmp_path)) as hub:
                stop = asyncio.Event()
                ready.set_result((hub, stop))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="hub")
    thread.start()
    hub, stop = ready.result(timeout=30)
    try:
        yield hub, loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


@dataclass
class Finding:
    operation: str
    check: str
    failure: Failure
    status: int | None
    body: Any
    curl: str
    sent: Any = None
    heard_again: bool = False
    """For a use-after-free: the hub rescanned between the DELETE and the read."""

    def __str__(self) -> str:
        return (
            f"{self.operation} [{self.check}] {self.failure.title}: {self.failure.message}\n"
            f"    -> {self.status} {self.body}\n    {self.curl}"
        )


@dataclass
class Run:
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rescans: list[float] = field(default_factory=list)

    def add(self, phase: str, recorder: Any) -> None:
        self.cases += len(recorder.cases)
        self.by_phase[phase] = self.by_phase.get(phase, 0) + len(recorder.cases)
        for case_id, node in recorder.cases.items():
            self.operations.add(node.value.operation.label)
            for check in recorder.checks.get(case_id, []):
                if check.failure_info is None:
                    continue
                failure = check.failure_info.failure
                sent_case = recorder.cases.get(failure.case_id or case_id, node).value
                interaction = recorder.interactions.get(failure.case_id or case_id)
                response = interaction.response if interaction is not None else None
                body: Any = None
                if response is not None:
                    try:
                        body = orjson.loads(response.content)
                    except orjson.JSONDecodeError:
                        body = response.content[:200]
                self.findings.append(
                    Finding(
                        operation=failure.operation or node.value.operation.label,
                        check=check.name,
                        failure=failure,
                        status=response.status_code if response is not None else None,
                        body=body,
                        curl=check.failure_info.code_sample,
                        sent=sent_case.body,
                        heard_again=self._rescanned_since(recorder, failure),
                    )
                )

    def _rescanned_since(self, recorder: Any, failure: Failure) -> bool:
        deleted = recorder.interactions.get(getattr(failure, "deleted_case_id", None))
        return deleted is not None and any(t > deleted.timestamp for t in self.rescans)


def _excused(finding: Finding) -> str | None:
    """Why a finding is a false positive of a generic check here, or None: a real finding."""
    problem_type = finding.body.get("type") if isinstance(finding.body, dict) else None
    if (
        finding.operation == "POST /api/v1/pair"
        and finding.check == "positive_data_acceptance"
        and finding.status == 400
        and problem_type == "urn:mcgw:problem:pairing-failed"
    ):
        # A well-formed code that is unknown, expired or used is refused with 400 (RFC 6749's
        # invalid_grant), as documented. The check excuses exactly this for operations that
        # mint credentials, but recognises them only by an OAuth2 tokenUrl, which a bearer
        # scheme has not.
        return "a pairing code the schema allows but the hub never issued"
    if (
        finding.operation
        in ("POST /api/v1/programs", "PUT /api/v1/programs/{slug}", "POST /api/v1/programs/check")
        and finding.check == "positive_data_acceptance"
        and finding.status == 422
        and problem_type == "urn:mcgw:problem:invalid-program"
    ):
        # The safety rules relate fields to each other and to the hub's settings (a zone's cap,
        # the hub cap, the session-length cap, a cue within its step: S1, S10); the schema has
        # each field's range, and these refusals are documented as 422 invalid-program.
        return "a program within every field's range that breaks a safety rule"
    if (
        finding.operation in ("POST /api/v1/plans", "PATCH /api/v1/plans/{plan_id}")
        and finding.check == "positive_data_acceptance"
        and finding.status == 422
        and problem_type == "urn:mcgw:problem:invalid-plan"
    ):
        # Whether phases make a schedule relates them to each other (order, an open-ended
        # phase only last, a duration or an end, not both): documented as 422 invalid-plan.
        return "phases within every field's range that do not make a schedule"
    if (
        finding.check == "positive_data_acceptance"
        and finding.status == 422
        and isinstance(finding.body, dict)
        and finding.body.get("errors")
        and all(_integral_float(finding.sent, e) for e in finding.body["errors"])
    ):
        # JSON Schema's "integer" admits 5.0; the hub's bodies are strict on purpose and take a
        # level, amplitude or duration only as a JSON integer (api/schemas.py). No schema
        # keyword can say "no fraction part, not even .0", so the check cannot know.
        return "an integral float where the strict body wants a JSON integer"
    if (
        finding.operation == "PUT /api/v1/devices/{address}/owner"
        and finding.check == "positive_data_acceptance"
        and finding.status == 422
        and isinstance(finding.body, dict)
        and finding.body.get("errors") == [{"field": "user_id", "reason": "no such user"}]
    ):
        # A user id in range that names nobody: refused with 422 naming the field, as
        # documented (which users exist is state, not shape; POST /tokens answers 404 instead).
        return "an owner id that names no user"
    if (
        finding.operation == "DELETE /api/v1/devices/{address}"
        and finding.check == "use_after_free"
        and finding.heard_again
        and isinstance(finding.body, dict)
        and finding.body.get("state") == "discovered"
        and finding.body.get("claimed") is False
    ):
        # Forgetting a device is not destroying it: when a scan hears it again (here the
        # harness's rescan, device_in_range) it is listed as discovered and unclaimed, as
        # documented. Without a rescan between them the DELETE and the read must agree.
        return "a forgotten device heard again by a scan"
    return None


def _integral_float(body: Any, error: dict[str, str]) -> bool:
    """Whether ``error`` refuses a float with no fraction (5.0) sent where an int belongs."""
    if error.get("reason") != "Input should be a valid integer":
        return False
    value = body
    for part in error["field"].replace("]", "").replace("[", ".").split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return False
    return isinstance(value, float) and value.is_integer()


@dataclass
class Identity:
    name: str
    user_id: int
    token: str
    token_id: int


def _identities(hub: Hub, loop: asyncio.AbstractEventLoop) -> list[Identity]:
    """alice and bob (one claimed device each, consent given), then an admin.

    Made after two others, so that the ids the documented examples use (user 2, on which the
    examples phase grants and takes admin rights; hook filters do not apply to examples) and
    the smallest ids (1) belong to a spare user and to the admin.
    """

    async def make(name: str, *, admin: bool = False, device: int | None = None) -> Identity:
        user_id, token = await hub.user(name, admin=admin)
        await hub.runtime.access_changed()  # as `mcgw token create` would be, at once
        if device is not None:
            await hub.claimed_device(token, device)
        principal = hub.runtime.access.authenticate(token)
        assert principal is not None
        assert principal.token_id is not None
        return Identity(name, user_id, token, principal.token_id)

    async def make_all() -> list[Identity]:
        await make("carol")
        root = await make("root", admin=True)
        return [await make("alice", device=0), await make("bob", device=1), root]

    made: list[Identity] = asyncio.run_coroutine_threadsafe(make_all(), loop).result(timeout=30)
    return made


def _schema(hub: Hub, identities: list[Identity], phases: set[str], auth_file: Path) -> Any:
    auth_file.write_bytes(
        orjson.dumps(
            {
                "auth": [
                    {
                        "name": who.name,
                        "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {who.token}"}],
                    }
                    for who in identities
                ]
            }
        )
    )
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "request-timeout": 20,
            # Every check is on by default; `--checks all` also bounds each response's time.
            "checks": {"max_response_time": MAX_RESPONSE_S},
            # alice and bob must never see each other's things (object_level_authorization
            # replays alice's reads as bob). The fuzzing phases send each operation as alice,
            # or as the next identity where she is refused (admins only); the stateful phase
            # is alice's day (claim, start, pause, stop), so all of it runs as her.
            "auth": {
                "wfc": {
                    "path": str(auth_file),
                    "peers": ["alice", "bob"],
                    **({"user": "alice"} if "stateful" in phases else {}),
                }
            },
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": "examples" in phases},
                "coverage": {"enabled": "coverage" in phases},
                "fuzzing": {"enabled": "fuzzing" in phases},
                "stateful": {
                    "enabled": "stateful" in phases,
                    "max-steps": STATEFUL_MAX_STEPS,
                    "generation": {"max-examples": STATEFUL_SCENARIOS},
                },
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{hub.base_url}/openapi.json", config=config)
    schema = schema.exclude(path=list(SKIPPED))
    own_tokens = {str(who.token_id) for who in identities}
    peers = {str(who.user_id) for who in identities if who.name in ("alice", "bob")}

    @schema.hook
    def filter_case(context: Any, case: Any) -> bool:
        label = case.operation.label
        if label == "DELETE /api/v1/tokens/{token_id}":
            # An identity revoking its own token would leave it only 401s for the rest.
            return str(case.path_parameters.get("token_id")) not in own_tokens
        if label == "PATCH /api/v1/users/{user_id}" and isinstance(case.body, dict):
            # alice or bob made admin may see the other's things by right.
            user_id = str(case.path_parameters.get("user_id"))
            return not (user_id in peers and case.body.get("is_admin"))
        return True

    return schema


@contextlib.contextmanager
def device_in_range(hub: Hub, loop: asyncio.AbstractEventLoop, run: Run) -> Iterator[None]:
    """The simulated devices stay in range, as they would on a bathroom shelf: before a claim
    the hub scans if it forgot one (a forgotten device comes back when a scan hears it;
    POST /devices/scan itself is left out), and after a claim the caller waits until the hub
    has connected the device, as an app waits for "bonded" before it starts a session.

    Without this the first DELETE /devices/{address} would end claiming, starting, pausing
    and stopping for the rest of the stateful phase. Global hooks (schemathesis allows no
    other for before_call and after_call), removed on the way out; each rescan is recorded
    so that ``_excused`` can tell a device heard again from one never forgotten.
    """

    async def rescan() -> None:
        devices = hub.runtime.devices
        heard = devices.discovered_addresses() | set(devices.addresses())
        if not {sim_address(0), sim_address(1)} <= heard:
            await devices.scan(timeout_s=RESCAN_S)
            run.rescans.append(time.time())

    def before_call(context: Any, case: Any, kwargs: Any) -> None:
        if case.operation.label == "POST /api/v1/devices/{address}/claim":
            asyncio.run_coroutine_threadsafe(rescan(), loop).result(timeout=30)

    def after_call(context: Any, case: Any, response: Any) -> None:
        claimed = case.operation.label == "POST /api/v1/devices/{address}/claim"
        if claimed and response.status_code == 200:
            connected = hub.runtime.wait_connected(timeout_s=CONNECT_WAIT_S)
            with contextlib.suppress(TimeoutError):
                asyncio.run_coroutine_threadsafe(connected, loop).result(timeout=30)

    schemathesis.hook(before_call)
    schemathesis.hook(after_call)
    try:
        yield
    finally:
        schemathesis.hooks.unregister(before_call)
        schemathesis.hooks.unregister(after_call)


def _execute(schema: Any, result: Run) -> None:
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            result.add(str(getattr(event, "phase", "fuzzing")), event.recorder)
        elif isinstance(event, events.NonFatalError):
            result.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                result.findings.append(
                    Finding(failure.operation or "-", "after_run", failure, None, None, "")
                )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_schemathesis_all_checks_and_stateful_phase_find_nothing(
    tmp_path: Path, record_property: Any
) -> None:
    result = Run()
    # The stateful phase starts on a fresh hub: after the fuzzing phases, devices are forgotten
    # and consent withdrawn, and the links would lead nowhere.
    for phases in ({"examples", "coverage", "fuzzing"}, {"stateful"}):
        workdir = tmp_path / "-".join(sorted(phases))
        workdir.mkdir()
        with hub_in_thread(workdir) as (hub, loop):
            identities = _identities(hub, loop)
            with device_in_range(hub, loop, result):
                _execute(_schema(hub, identities, phases, workdir / "auth.json"), result)
            # An object-level finding means something only while the peers are not admins.
            for who in identities[:2]:
                principal = hub.runtime.access.authenticate(who.token)
                assert principal is not None, f"{who.name}'s token was revoked"
                assert not principal.is_admin, f"{who.name} was made an admin"

    real = [f for f in result.findings if _excused(f) is None]
    excused = len(result.findings) - len(real)
    print(
        f"\nschemathesis: {len(result.operations)} operations, {result.cases} cases "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(result.by_phase.items()))}), "
        f"{len(real)} findings, {excused} excused, {len(result.errors)} errors"
    )
    record_property("schemathesis_operations", len(result.operations))
    record_property("schemathesis_cases", result.cases)
    record_property("schemathesis_excused", excused)
    assert not result.errors, "\n".join(result.errors)
    assert not real, "\n\n".join(str(f) for f in real)
    assert len(result.operations) >= 30
