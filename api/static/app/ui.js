// DOM helpers for the hub's page. Text is always set as text (textContent, text nodes),
// never parsed as HTML: a device or user name is shown exactly as typed, and markup in it
// stays inert. There is no innerHTML anywhere in the page.

/**
 * An element. `attrs`: attributes and properties (`class`, `for`, `onclick`, `dataset`, …);
 * children: nodes, strings (as text), arrays, or null/false (skipped).
 * @param {string} tag
 * @param {Record<string, any>|null} [attrs]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = null, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/** @param {Node} el @param {any[]} children */
function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace an element's children. @param {Element} el @param {...any} children */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
/** An SVG element. @param {string} tag @param {Record<string, any>} [attrs] */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) if (child) el.appendChild(child);
  return el;
}

/** "5 min 30 s" from seconds. @param {number} s */
export function duration(s) {
  s = Math.max(0, Math.round(s));
  const m = Math.floor(s / 60);
  const r = s % 60;
  if (!m) return `${r} s`;
  return r ? `${m} min ${r} s` : `${m} min`;
}

/** "4:05" from seconds. @param {number} s */
export function clock(s) {
  s = Math.max(0, Math.ceil(s));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export const ZONES = ["forehead", "brow", "eye_area", "cheeks", "jawline", "neck"];
/** @param {string|null|undefined} zone */
export function zoneName(zone) {
  if (!zone) return "—";
  return zone === "eye_area" ? "eye area" : zone;
}

/** A local date and time. @param {string|null} iso */
export function when(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** A signal strength in words and dBm ("fair (-68 dBm)"); the same bands as /metrics.
 * @param {number|null|undefined} rssi */
export function signal(rssi) {
  if (rssi === null || rssi === undefined) return "—";
  const bars = rssi > -60 ? "strong" : rssi > -75 ? "fair" : "weak";
  return `${bars} (${rssi} dBm)`;
}

/** The message to show for a failed call. @param {any} error */
export function message(error) {
  return error && error.message ? String(error.message) : String(error);
}

/**
 * A labelled form field with a place for its error (aria-describedby), ids derived from `id`.
 * @param {string} label @param {string} id @param {HTMLElement} input
 */
export function field(label, id, input, hint = "") {
  input.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", `${id}-error`);
  return h("div", { class: "field" }, h("label", { for: id }, label),
    hint ? h("p", { class: "hint" }, hint) : null, input, error);
}

/** Show (or clear) a field's error. @param {string} id @param {string|null} text */
export function setFieldError(id, text) {
  const input = document.getElementById(id);
  const error = document.getElementById(`${id}-error`);
  if (error) error.textContent = text || "";
  if (input) {
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

/** A status line for a screen's feedback. */
export function statusLine() {
  return h("p", { class: "status", role: "status", "aria-live": "polite" });
}
