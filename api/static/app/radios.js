// The Admin screen's Bluetooth panel: each radio (state, slots used and free, adverts heard
// per second, connect failures, last error) and each device's link (radio, signal, MTU,
// reconnects, last disconnect reason), from GET /api/v1/radios. It refreshes every few
// seconds while the screen is open and stops when the screen is left. Text only (ui.js).

import { fill, h, message, signal, statusLine } from "./ui.js";

/** @typedef {import("./app.js").App} App */
/** @typedef {import("./mcgw-client.js").Radio} Radio */
/** @typedef {import("./mcgw-client.js").DeviceLink} DeviceLink */

export const REFRESH_MS = 3000;

/** @param {any} value */
function text(value) { return value === null || value === undefined ? "—" : String(value); }

/** @param {Radio} r */
function radioRow(r) {
  return h("tr", { dataset: { radio: r.name } },
    h("th", { scope: "row" }, r.name), h("td", null, r.mode), h("td", null, r.state),
    h("td", { class: "nowrap" }, `${r.slots_used} used, ${r.slots_free} free`),
    h("td", null, r.adverts_per_s.toFixed(1)),
    h("td", null, `${r.connect_failures} of ${r.connect_attempts}`),
    h("td", null, String(r.reopens)), h("td", null, text(r.last_error)));
}

/** @param {DeviceLink} d */
function linkRow(d) {
  return h("tr", { dataset: { address: d.address } },
    h("th", { scope: "row", class: "nowrap" }, d.name || d.address), h("td", null, d.address),
    h("td", null, d.state), h("td", null, text(d.radio)),
    h("td", { class: "nowrap" }, signal(d.signal_dbm)),
    h("td", null, text(d.mtu)), h("td", { class: "reconnects" }, String(d.reconnects)),
    h("td", null, text(d.last_disconnect_reason)));
}

/** @param {string} label @param {string[]} columns @param {HTMLElement} body */
function table(label, columns, body) {
  return h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": label },
    h("table", null, h("thead", null, h("tr", null,
      columns.map((c) => h("th", { scope: "col" }, c)))), body));
}

/** The panel, filled once before it is shown. @param {App} app */
export async function radioPanel(app) {
  const radios = h("tbody");
  const links = h("tbody");
  const status = statusLine();

  let busy = false;
  async function refresh() {
    if (busy) return;  // a slow answer: skip a beat rather than pile requests up
    busy = true;
    try {
      const report = await app.client.radios();
      fill(radios, report.radios.map(radioRow));
      fill(links, report.devices.length ? report.devices.map(linkRow)
        : h("tr", null, h("td", { colspan: 8 }, "No device yet.")));
      status.textContent = "";
    } catch (error) {
      status.textContent = `Not refreshed: ${message(error)}`;
    } finally {
      busy = false;
    }
  }
  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  app.onLeave(() => clearInterval(timer));
  return h("div", { class: "card" }, h("h2", null, "Bluetooth radios"),
    h("p", { class: "hint" }, `Refreshed every ${REFRESH_MS / 1000} s while this screen is open.`),
    status,
    table("Radios", ["Radio", "Mode", "State", "Slots", "Adverts/s", "Connect failures",
      "Reopens", "Last error"], radios),
    h("h3", null, "Device links"),
    table("Device links", ["Device", "Address", "State", "Radio", "Signal", "MTU", "Reconnects",
      "Last disconnect"], links));
}
