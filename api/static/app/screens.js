// Screens: Pair, Consent, Devices, Programs (with the custom program builder), Settings, Admin
// (its Bluetooth panel is radios.js).
// Each takes the shared app state (app.js) and returns the screen's element. Every name shown
// is set as text (ui.js), never as HTML.

import { ApiError, uuid4 } from "./mcgw-client.js";
import {
  ZONES, duration, field, fill, h, message, setFieldError, signal, statusLine, when, zoneName,
} from "./ui.js";
import { radioPanel } from "./radios.js";

/** @typedef {import("./app.js").App} App */

// --- Pair -------------------------------------------------------------------------------------

/** @param {App} app @param {string} code */
export function pairScreen(app, code) {
  const input = h("input", {
    name: "code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}",
    maxlength: 6, required: true, value: /^\d{6}$/.test(code) ? code : null,
  });
  const phone = h("input", { name: "client_name", maxlength: 80, value: phoneName() });
  const status = statusLine();
  const form = h("form", { class: "card", novalidate: true },
    field("Pairing code", "pair-code", input, "The 6 digits from “mcgw pair” on the hub, or from an admin."),
    field("Name of this phone", "pair-phone", phone),
    h("button", { type: "submit", class: "primary" }, "Pair"),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setFieldError("pair-code", null);
    const value = /** @type {HTMLInputElement} */ (input).value.trim();
    if (!/^\d{6}$/.test(value)) {
      setFieldError("pair-code", "Enter the 6 digits of the code.");
      return;
    }
    status.textContent = "Pairing…";
    try {
      const result = await app.client.pair(value,
        /** @type {HTMLInputElement} */ (phone).value.trim() || "phone", { cookie: true });
      status.textContent = "";
      history.replaceState(null, "", "#/pair"); // the code leaves the address bar
      app.signedIn(result.user);
      app.go(result.user.consent.accepted ? "devices" : "consent");
    } catch (error) {
      status.textContent = "";
      const reason = error instanceof ApiError ? error.fieldError("code") : null;
      setFieldError("pair-code", reason ? `${message(error)} (${reason})` : message(error));
    }
  });
  if (app.me) {
    return h("section", null, h("h1", null, "Pair"),
      h("p", null, `This browser is paired as ${app.me.name}.`),
      h("p", null, h("a", { href: "#/devices" }, "Go to your devices")));
  }
  if (/^\d{6}$/.test(code)) setTimeout(() => form.isConnected && form.requestSubmit(), 0);
  return h("section", null, h("h1", null, "Pair this phone with the hub"),
    h("p", null, "Ask the hub's owner for a pairing code, or open the pairing link they send."),
    form);
}

function phoneName() {
  const ua = navigator.userAgent;
  if (/iPhone/.test(ua)) return "iPhone";
  if (/Android/.test(ua)) return "Android phone";
  return "browser";
}

// --- Consent ----------------------------------------------------------------------------------

/** @param {App} app */
export function consentScreen(app) {
  const me = /** @type {any} */ (app.me);
  const box = h("input", { type: "checkbox", id: "consent-read", required: true });
  const status = statusLine();
  const button = h("button", { type: "submit", class: "primary" }, "I accept");
  const form = h("form", { class: "card" },
    h("h2", null, "Before your first session"),
    h("p", { class: "notice" }, me.consent.notice),
    h("div", { class: "check" }, box,
      h("label", { for: "consent-read" }, "I have read the notice, and none of it applies to me")),
    button, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!/** @type {HTMLInputElement} */ (box).checked) {
      status.textContent = "Tick the box to confirm you read the notice.";
      return;
    }
    try {
      app.me = await app.client.acceptConsent(me.consent.current_version);
      app.go("devices");
    } catch (error) {
      status.textContent = message(error);
    }
  });
  const accepted = me.consent.accepted
    ? h("p", null, `You accepted this notice on ${when(me.consent.accepted_at)}.`)
    : null;
  return h("section", null, h("h1", null, "Consent"), accepted, accepted ? null : form,
    accepted ? h("p", { class: "notice" }, me.consent.notice) : null);
}

// --- Devices ----------------------------------------------------------------------------------

/** @param {number|null} value @param {string} unit */
function pct(value, unit = "%") { return value === null || value === undefined ? "—" : `${value}${unit}`; }

/** @param {App} app */
export async function devicesScreen(app) {
  const list = h("ul", { class: "cards", "aria-label": "Devices" });
  const status = statusLine();
  const section = h("section", null,
    h("div", { class: "title-row" }, h("h1", null, "Devices"),
      h("button", { type: "button", onclick: () => scan() }, "Scan")),
    status, list);

  async function refresh() {
    const devices = await app.client.devices();
    fill(list, devices.length ? devices.map((d) => deviceCard(app, d, refresh, status))
      : h("li", null, "No device yet: switch yours on near the hub and press Scan."));
  }
  async function scan() {
    status.textContent = "Scanning…";
    try {
      await app.client.scan(2);
      status.textContent = "";
      await refresh();
    } catch (error) {
      status.textContent = message(error);
    }
  }
  await refresh();
  const timer = setInterval(() => {
    if (!list.querySelector("form")) refresh().catch(() => {});
  }, 5000);
  app.onLeave(() => clearInterval(timer));
  return section;
}

/** @param {App} app @param {any} d @param {() => Promise<void>} refresh @param {HTMLElement} status */
function deviceCard(app, d, refresh, status) {
  const facts = h("dl", { class: "facts" },
    h("dt", null, "State"), h("dd", null, d.state),
    h("dt", null, "Battery"), h("dd", null, pct(d.battery_pct)),
    h("dt", null, "Contact"), h("dd", null, pct(d.contact_quality)),
    h("dt", null, "Signal"), h("dd", null, signal(d.rssi)));
  const actions = h("div", { class: "actions" });
  /** @param {() => Promise<any>} fn */
  const act = async (fn) => {
    try {
      await fn();
      status.textContent = "";
      await refresh();
    } catch (error) {
      status.textContent = message(error);
    }
  };
  if (!d.claimed) {
    actions.append(h("button", { type: "button", "aria-label": `Claim ${d.name}`,
      onclick: () => act(() => app.client.claim(d.address)) }, "Claim"));
  }
  if (d.owned_by_you || (app.me?.is_admin && d.claimed)) {
    actions.append(
      h("a", { class: "button primary", href: `#/programs/${encodeURIComponent(d.address)}` },
        "Start a program"),
      h("button", { type: "button", "aria-label": `Rename ${d.name}`,
        onclick: () => rename() }, "Rename"),
      h("button", { type: "button", class: "danger", "aria-label": `Forget ${d.name}`,
        onclick: () => {
          if (confirm(`Forget ${d.name}? Its history is kept.`)) {
            act(() => app.client.forget(d.address));
          }
        } }, "Forget"));
  }
  if (d.active_session_id) {
    actions.append(h("a", { class: "button", href: `#/live/${d.active_session_id}` }, "Live session"));
  }
  const title = h("h2", null, d.name);
  const card = h("li", { class: "card device" }, title,
    h("p", { class: "address" }, d.address), facts, actions);

  function rename() {
    const id = `rename-${d.address.replace(/:/g, "")}`;
    const input = h("input", { value: d.name, maxlength: 80, required: true });
    const form = h("form", { class: "inline" }, field("New name", id, input),
      h("button", { type: "submit", class: "primary" }, "Save"),
      h("button", { type: "button", onclick: () => form.replaceWith(actions) }, "Cancel"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await app.client.rename(d.address, /** @type {HTMLInputElement} */ (input).value);
        await refresh();
      } catch (error) {
        setFieldError(id, error instanceof ApiError
          ? error.fieldError("name") || message(error) : message(error));
      }
    });
    actions.replaceWith(form);
    /** @type {HTMLInputElement} */ (input).focus();
  }
  return card;
}

// --- Programs ---------------------------------------------------------------------------------

/** @param {App} app @param {string} device the address to start on, if given */
export async function programsScreen(app, device) {
  const [programs, devices] = await Promise.all([app.client.programs(), app.client.devices()]);
  const mine = devices.filter((d) => d.owned_by_you && d.state === "bonded");
  const zone = h("select", { name: "zone" },
    h("option", { value: "" }, "every zone"),
    ZONES.map((z) => h("option", { value: z }, zoneName(z))));
  const deviceSelect = h("select", { name: "device" },
    mine.length ? mine.map((d) => h("option", { value: d.address, selected: d.address === device },
      `${d.name} (${d.address})`)) : h("option", { value: "" }, "no device of yours is ready"));
  const level = h("select", { name: "level" },
    [1, 2, 3, 4, 5].map((n) => h("option", { value: n, selected: n === 3 }, String(n))));
  const list = h("ul", { class: "cards", "aria-label": "Programs" });
  const status = statusLine();

  function show() {
    const wanted = /** @type {HTMLSelectElement} */ (zone).value;
    const shown = programs.filter((p) => !wanted || p.steps.some((s) => s.zone === wanted));
    fill(list, shown.map((p) => programCard(p)));
  }
  /** @param {any} p */
  function programCard(p) {
    const zones = [...new Set(p.steps.map((/** @type {any} */ s) => zoneName(s.zone)))];
    return h("li", { class: "card program" },
      h("h2", null, p.name),
      h("p", { class: "meta" }, `${duration(p.duration_s)} · ${zones.join(", ")}`),
      p.description ? h("p", null, p.description) : null,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", "aria-label": `Start ${p.name}`,
          disabled: !mine.length, onclick: () => start(p) }, "Start"),
        p.owned_by_you && !p.builtin ? h("button", { type: "button", class: "danger",
          "aria-label": `Delete ${p.name}`, onclick: async () => {
            try {
              await app.client.deleteProgram(p.slug);
              programs.splice(programs.indexOf(p), 1);
              show();
            } catch (error) {
              status.textContent = message(error);
            }
          } }, "Delete") : null));
  }
  /** @param {any} p */
  async function start(p) {
    const address = /** @type {HTMLSelectElement} */ (deviceSelect).value;
    if (!address) return;
    status.textContent = `Starting ${p.name}…`;
    primeCues();
    try {
      // Watch the device first, so the first "move" cue is not missed.
      const { watchDevice } = await import("./live.js");
      await watchDevice(app, address);
      const session = await app.client.startSession({
        device: address, program: p.slug,
        level: Number(/** @type {HTMLSelectElement} */ (level).value), idempotencyKey: uuid4(),
      });
      app.setActive(session);
      app.go(`live/${session.id}`);
    } catch (error) {
      status.textContent = message(error);
    }
  }
  zone.addEventListener("change", show);
  show();
  return h("section", null, h("h1", null, "Programs"),
    h("div", { class: "card controls" },
      field("Device", "start-device", deviceSelect),
      field("Intensity level", "start-level", level),
      field("Show programs for", "program-zone", zone)),
    status, list, await builder(app, programs, show));
}

/** Unlock sound and vibration for the session's cues: browsers need a user gesture first. */
export function primeCues() {
  const Audio = window.AudioContext;
  if (Audio && !/** @type {any} */ (window).mcgwAudio) {
    try {
      /** @type {any} */ (window).mcgwAudio = new Audio();
    } catch {
      // No sound then; the visual cue and vibration remain.
    }
  }
}

/** The custom program builder, checked by the hub as it is typed (POST /programs/check).
 * @param {App} app @param {any[]} programs @param {() => void} show */
async function builder(app, programs, show) {
  const hub = await app.client.hub();
  const steps = h("ol", { class: "steps" });
  const status = statusLine();
  const name = h("input", { maxlength: 80, required: true, value: "My program" });
  const slug = h("input", { maxlength: 40, required: true, value: "my-program",
    pattern: "[a-z0-9-]+" });
  const description = h("textarea", { maxlength: 500, rows: 2 });
  const caps = h("p", { class: "hint" }, `Caps on this hub (µA): ${ZONES.map(
    (z) => `${zoneName(z)} ${hub.zone_caps_ua[z]}`).join(", ")}. Steps last ${hub.step_min_s}-${
    hub.step_max_s} s; a program at most ${hub.max_session_min} min.`);
  let count = 0;
  /** @param {any} [step] */
  function addStep(step = { zone: "forehead", amplitude_ua: 300, duration_s: 60 }) {
    const n = count++;
    const zone = h("select", null, ZONES.map((z) => h("option", { value: z,
      selected: z === step.zone }, zoneName(z))));
    const amplitude = h("input", { type: "number", inputmode: "numeric", min: 10, max: 500,
      step: 1, value: step.amplitude_ua });
    const seconds = h("input", { type: "number", inputmode: "numeric", min: hub.step_min_s,
      max: hub.step_max_s, step: 1, value: step.duration_s });
    const item = h("li", { class: "step", dataset: { n: String(n) } },
      field("Zone", `step-${n}-zone`, zone),
      field("Amplitude (µA)", `step-${n}-amplitude_ua`, amplitude),
      field("Duration (s)", `step-${n}-duration_s`, seconds),
      h("button", { type: "button", class: "danger", "aria-label": `Remove step ${n + 1}`,
        onclick: () => { item.remove(); check(); } }, "Remove"));
    steps.appendChild(item);
  }
  function draft() {
    const items = [...steps.querySelectorAll("li.step")];
    return {
      items,
      body: {
        slug: /** @type {HTMLInputElement} */ (slug).value.trim(),
        name: /** @type {HTMLInputElement} */ (name).value.trim(),
        description: /** @type {HTMLTextAreaElement} */ (description).value,
        steps: items.map((li) => {
          const n = /** @type {HTMLElement} */ (li).dataset.n;
          const value = (/** @type {string} */ k) =>
            /** @type {HTMLInputElement} */ (document.getElementById(`step-${n}-${k}`)).value;
          return { zone: value("zone"), amplitude_ua: Number(value("amplitude_ua")),
            duration_s: Number(value("duration_s")) };
        }),
      },
    };
  }
  /** Map an API field ("steps[1].amplitude_ua", "slug") to the input it belongs to.
   * @param {HTMLElement[]} items @param {string} path */
  function inputFor(items, path) {
    const m = /^steps\[(\d+)\]\.(\w+)$/.exec(path);
    if (m) {
      const li = items[Number(m[1])];
      return li ? `step-${li.dataset.n}-${m[2]}` : null;
    }
    return { slug: "program-slug", name: "program-name", description: "program-description" }[
      /** @type {"slug"} */ (path)] || null;
  }
  function clearErrors() {
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }
  /** Show the hub's errors next to their fields; true when there were none.
   * @param {any} error @param {HTMLElement[]} items */
  function showErrors(error, items) {
    clearErrors();
    if (!error) return true;
    const unplaced = [];
    for (const e of (error instanceof ApiError && error.problem.errors) || []) {
      const id = inputFor(items, e.field);
      if (id) setFieldError(id, e.reason);
      else unplaced.push(`${e.field}: ${e.reason}`);
    }
    status.textContent = unplaced.length ? unplaced.join("; ")
      : error instanceof ApiError && error.problem.errors?.length ? "" : message(error);
    return false;
  }
  let timer = 0;
  let checking = 0;
  function check() {
    clearTimeout(timer);
    timer = window.setTimeout(async () => {
      if (!form.isConnected) return;
      const ticket = ++checking;
      const { items, body } = draft();
      let error = null;
      try {
        const checked = await app.client.checkProgram(body);
        if (ticket === checking) status.textContent = `OK: ${duration(checked.duration_s)}.`;
      } catch (e) {
        error = e;
      }
      if (ticket === checking) showErrors(error, items);
    }, 250);
  }
  const form = h("form", { class: "card builder", novalidate: true },
    h("h2", null, "Build your own program"), caps,
    field("Name", "program-name", name),
    field("Short name (letters, digits, dashes)", "program-slug", slug),
    field("What it does", "program-description", description),
    steps,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => { addStep(); check(); } }, "Add a step"),
      h("button", { type: "submit", class: "primary" }, "Save program")),
    status);
  form.addEventListener("input", check);
  form.addEventListener("change", check);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { items, body } = draft();
    try {
      const created = await app.client.createProgram(body);
      programs.push(created);
      show();
      clearErrors();
      status.textContent = `Saved ${created.name}.`;
    } catch (error) {
      showErrors(error, items);
    }
  });
  addStep();
  app.onLeave(() => clearTimeout(timer));
  return form;
}

// --- Settings ---------------------------------------------------------------------------------

/** @param {App} app */
export async function settingsScreen(app) {
  const me = /** @type {any} */ (app.me);
  const tokens = await app.client.tokens();
  const cap = h("input", { type: "number", inputmode: "numeric", min: 10, max: 500,
    value: me.cap_ua ?? "" });
  const capStatus = statusLine();
  const capForm = h("form", { class: "card", novalidate: true },
    h("h2", null, "Personal cap"),
    field("Most current for you (µA, empty for none)", "me-cap", cap,
      "Programs above it play lowered to it; the hub's and the zones' caps still apply."),
    h("button", { type: "submit", class: "primary" }, "Save cap"), capStatus);
  capForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    setFieldError("me-cap", null);
    const text = /** @type {HTMLInputElement} */ (cap).value.trim();
    try {
      app.me = await app.client.setCap(text ? Number(text) : null);
      capStatus.textContent = "Saved.";
    } catch (error) {
      setFieldError("me-cap", error instanceof ApiError
        ? error.fieldError("cap_ua") || message(error) : message(error));
    }
  });
  const list = h("ul", { class: "rows", "aria-label": "Your phones and tokens" });
  const status = statusLine();
  function showTokens() {
    fill(list, tokens.map((t) => h("li", null,
      h("span", null, h("strong", null, t.name), ` · since ${when(t.created_at)}`,
        t.revoked_at ? " · revoked" : ` · last used ${when(t.last_used_at)}`),
      t.revoked_at ? null : h("button", { type: "button", class: "danger",
        "aria-label": `Revoke ${t.name}`, onclick: async () => {
          try {
            await app.client.revokeToken(t.id);
            t.revoked_at = new Date().toISOString();
            showTokens();
          } catch (error) {
            status.textContent = message(error);
          }
        } }, "Revoke"))));
  }
  showTokens();
  return h("section", null, h("h1", null, "Settings"),
    h("p", null, `Signed in as ${me.name}${me.is_admin ? " (admin)" : ""}.`),
    capForm,
    h("div", { class: "card" }, h("h2", null, "Your phones and tokens"), list, status),
    h("div", { class: "card" }, h("h2", null, "This browser"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        try {
          await app.client.signOut();
        } finally {
          app.signedOut();
        }
      } }, "Sign out")),
    h("p", { class: "hint" }, h("a", { href: "#/consent" }, "The contraindication notice")));
}

// --- Admin ------------------------------------------------------------------------------------

/** @param {App} app */
export async function adminScreen(app) {
  const [users, settings, devices, radios] = await Promise.all([
    app.client.users(), app.client.hubSettings(), app.client.devices(), radioPanel(app)]);
  const codeName = h("input", { maxlength: 80, value: "phone", required: true });
  const codeAdmin = h("input", { type: "checkbox", id: "code-admin" });
  const codeOut = h("div", { class: "code-out", "aria-live": "polite" });
  const codeForm = h("form", { class: "card" }, h("h2", null, "Pairing codes"),
    field("Name of the new user", "code-name", codeName),
    h("div", { class: "check" }, codeAdmin, h("label", { for: "code-admin" }, "Admin rights")),
    h("button", { type: "submit", class: "primary" }, "Make a pairing code"), codeOut);
  codeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const issued = await app.client.pairingCode({
        name: /** @type {HTMLInputElement} */ (codeName).value.trim() || "phone",
        is_admin: /** @type {HTMLInputElement} */ (codeAdmin).checked });
      const link = new URL(issued.link, location.href).href;
      fill(codeOut, h("p", { class: "code" }, issued.code),
        h("p", null, `Valid until ${when(issued.expires_at)}. Link: `, h("a", { href: link }, link)));
    } catch (error) {
      fill(codeOut, h("p", { class: "error" }, message(error)));
    }
  });
  const tokenList = h("ul", { class: "rows", "aria-label": "Tokens of the user" });
  /** @param {number} userId */
  async function showTokens(userId) {
    const tokens = await app.client.tokens(userId);
    fill(tokenList, tokens.length ? tokens.map((t) => h("li", null,
      h("span", null, h("strong", null, t.name), ` · ${when(t.created_at)}`,
        t.revoked_at ? " · revoked" : ""),
      t.revoked_at ? null : h("button", { type: "button", class: "danger",
        "aria-label": `Revoke ${t.name}`, onclick: async () => {
          await app.client.revokeToken(t.id);
          await showTokens(userId);
        } }, "Revoke"))) : h("li", null, "No token."));
  }
  const userRows = users.map((u) => h("tr", null,
    h("td", null, u.name), h("td", null, u.is_admin ? "admin" : "user"),
    h("td", null, u.consent_accepted ? "accepted" : "not yet"),
    h("td", null, u.cap_ua === null ? "—" : `${u.cap_ua} µA`),
    h("td", null, h("button", { type: "button", "aria-label": `Tokens of ${u.name}`,
      onclick: () => showTokens(u.id) }, "Tokens"))));
  const inRange = devices.map((d) => h("tr", null, h("td", null, d.name),
    h("td", null, d.address), h("td", null, d.state), h("td", null, signal(d.rssi)),
    h("td", null, d.claimed ? (d.owned_by_you ? "you" : "claimed") : "unclaimed")));
  return h("section", null, h("h1", null, "Admin"),
    codeForm,
    h("div", { class: "card" }, h("h2", null, "Users"), h("div", { class: "scroll", tabindex: 0 },
      h("table", null, h("thead", null, h("tr", null, ["Name", "Role", "Consent", "Cap", "Tokens"]
        .map((t) => h("th", { scope: "col" }, t)))), h("tbody", null, userRows))),
      h("h3", null, "Tokens"), tokenList),
    h("div", { class: "card" }, h("h2", null, "Devices in range"), h("div", { class: "scroll", tabindex: 0 },
      h("table", null, h("thead", null, h("tr", null, ["Name", "Address", "State", "Signal", "Owner"]
        .map((t) => h("th", { scope: "col" }, t)))), h("tbody", null, inRange)))),
    radios,
    h("div", { class: "card" }, h("h2", null, "Hub settings (read-only)"),
      h("p", { class: "hint" }, "Change them in the environment (MCGW_*) or the config file."),
      h("pre", { class: "settings", tabindex: 0 }, JSON.stringify(settings, null, 2))));
}
