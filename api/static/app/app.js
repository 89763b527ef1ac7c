// The hub's page: the shell (navigation, the disconnected banner, the Stop bar) and the router.
// Screens are hash routes (#/devices, #/live/<session>): each is one URL, and a pairing link's
// code (#/pair/482913) never reaches a server. Screens live in screens.js, live.js, history.js.

import { ApiError, McgwClient, stopSession } from "./mcgw-client.js";
import { fill, h, message } from "./ui.js";
import * as screens from "./screens.js";
import { liveScreen } from "./live.js";
import { historyScreen } from "./history.js";

/**
 * What every screen shares.
 * @typedef {{client: McgwClient, me: import("./mcgw-client.js").Me|null,
 *   live: import("./mcgw-client.js").LiveConnection|null,
 *   active: import("./mcgw-client.js").Session|null, events: EventTarget,
 *   go: (route: string) => void, refreshActive: () => Promise<void>,
 *   setActive: (s: import("./mcgw-client.js").Session|null) => void,
 *   stop: () => Promise<void>, signedIn: (me: any) => void, signedOut: () => void,
 *   onLeave: (fn: () => void) => void}} App
 */

/** @type {App} */
const app = {
  client: new McgwClient(),
  me: null,
  live: null,
  active: null,
  events: new EventTarget(),
  go: (route) => { location.hash = `#/${route}`; },
  refreshActive,
  setActive,
  stop,
  signedIn,
  signedOut,
  onLeave: (fn) => { leaving.push(fn); },
};

/** @type {(() => void)[]} */
let leaving = [];
let rendering = 0;
let wasOpen = false;

/** @type {Record<string, {title: string, screen: (app: App, param: string) => any,
 *   public?: boolean, admin?: boolean, nav?: boolean}>} */
const ROUTES = {
  pair: { title: "Pair", screen: screens.pairScreen, public: true },
  consent: { title: "Consent", screen: screens.consentScreen },
  devices: { title: "Devices", screen: screens.devicesScreen, nav: true },
  programs: { title: "Programs", screen: screens.programsScreen, nav: true },
  live: { title: "Live", screen: liveScreen, nav: true },
  history: { title: "History", screen: historyScreen, nav: true },
  settings: { title: "Settings", screen: screens.settingsScreen, nav: true },
  admin: { title: "Admin", screen: screens.adminScreen, nav: true, admin: true },
};

function parseHash() {
  const [name = "", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: name || "devices", param: decodeURIComponent(rest.join("/")) };
}

async function render() {
  const ticket = ++rendering;
  for (const fn of leaving) fn();
  leaving = [];
  let { name, param } = parseHash();
  let route = ROUTES[name];
  if (!route) {
    name = "devices";
    route = ROUTES.devices;
  }
  if (!app.me && !route.public) {
    location.replace("#/pair");
    return;
  }
  if (app.me && !app.me.consent.accepted && !["consent", "settings", "pair"].includes(name)) {
    location.replace("#/consent");
    return;
  }
  renderNav(name);
  const main = /** @type {HTMLElement} */ (document.getElementById("main"));
  document.title = `${route.title} · mcgw`;
  let content;
  if (route.admin && !app.me?.is_admin) {
    content = h("section", null, h("h1", null, "Admin"),
      h("p", null, "This screen is for the hub's admins."));
  } else {
    try {
      content = await route.screen(app, param);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signedOut();
        return;
      }
      content = h("section", null, h("h1", null, route.title),
        h("p", { class: "error", role: "alert" }, message(error)));
    }
  }
  if (ticket !== rendering) return;
  main.dataset.screen = name;
  fill(main, content);
  renderStopBar();
}

/** @param {string} current */
function renderNav(current) {
  const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
  if (!app.me || !app.me.consent.accepted) {
    nav.hidden = true;
    fill(nav);
    return;
  }
  nav.hidden = false;
  const links = Object.entries(ROUTES)
    .filter(([, r]) => r.nav && (!r.admin || app.me?.is_admin))
    .map(([name, r]) => h("li", null, h("a", {
      href: `#/${name}`,
      "aria-current": name === current ? "page" : null,
    }, r.title)));
  fill(nav, h("ul", null, links));
}

function renderStopBar() {
  const bar = /** @type {HTMLElement} */ (document.getElementById("stopbar"));
  const session = app.active;
  const open = session && ["pending", "running", "paused"].includes(session.state);
  document.body.classList.toggle("has-stopbar", Boolean(open));
  if (!open || !session) {
    bar.hidden = true;
    fill(bar);
    return;
  }
  bar.hidden = false;
  const onLive = parseHash().name === "live";
  fill(bar,
    h("span", { class: "stopbar-what" }, `${session.program} · ${session.state}`),
    onLive ? null : h("a", { href: `#/live/${session.id}` }, "Open live session"),
    h("button", { type: "button", class: "stop", onclick: () => stop() }, "Stop"));
}

/** @param {import("./mcgw-client.js").Session|null} session */
function setActive(session) {
  if (session && !["pending", "running", "paused"].includes(session.state)) {
    if (app.active && app.active.id === session.id) app.active = null;
  } else if (session) {
    app.active = session;
  } else {
    app.active = null;
  }
  renderStopBar();
  if (session) app.events.dispatchEvent(new CustomEvent("session", { detail: session }));
}

async function refreshActive() {
  if (!app.me) return;
  try {
    const page = await app.client.sessions({ state: ["pending", "running", "paused"], limit: 5 });
    const mine = page.items.find((s) => s.live && s.owner_id === app.me?.id)
      || page.items.find((s) => s.live) || null;
    if (mine) setActive(mine);
    else if (app.active) {
      app.active = null;
      renderStopBar();
    }
  } catch {
    // The Stop bar keeps what it knew; the next screen change asks again.
  }
}

/** Stop the active session: over the socket when it is up, else REST (never waits on it). */
async function stop() {
  const session = app.active;
  if (!session) return;
  const bar = document.getElementById("stopbar");
  const button = bar?.querySelector("button");
  try {
    const stopped = await stopSession(app.client, app.live, session.id);
    app.active = null;
    setActive(stopped);
  } catch (error) {
    if (button) button.textContent = "Stop";
    const note = h("span", { class: "error", role: "alert" }, `Stop failed: ${message(error)}`);
    bar?.appendChild(note);
  }
}

/** @param {any} me */
function signedIn(me) {
  app.me = me;
  if (!app.live) {
    app.live = app.client.live();
    app.live.addEventListener("state", (event) => {
      const state = /** @type {CustomEvent} */ (event).detail;
      if (state === "open") wasOpen = true;
      const banner = /** @type {HTMLElement} */ (document.getElementById("banner"));
      banner.hidden = state === "open" || !wasOpen;
    });
    app.live.addEventListener("unauthorized", () => signedOut());
  }
  refreshActive();
}

function signedOut() {
  app.me = null;
  app.active = null;
  if (app.live) app.live.close();
  app.live = null;
  wasOpen = false;
  const banner = document.getElementById("banner");
  if (banner) banner.hidden = true;
  if (parseHash().name !== "pair") location.replace("#/pair");
  else render();
}

async function boot() {
  try {
    signedIn(await app.client.me());
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      fill(/** @type {HTMLElement} */ (document.getElementById("main")),
        h("p", { class: "error", role: "alert" }, `The hub does not answer: ${message(error)}`));
    }
  }
  window.addEventListener("hashchange", () => render());
  await render();
}

boot();
