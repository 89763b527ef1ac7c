// History: your sessions (each with its telemetry as CSV), the delivered dose per zone per
// week (a chart, with the same figures in a table), and a streak calendar of the last weeks.

import { ZONES, duration, h, when, zoneName } from "./ui.js";

/** @typedef {import("./app.js").App} App */

export const ZONE_COLOURS = {
  forehead: "#1b6ca8", brow: "#8a4fbf", eye_area: "#c2185b",
  cheeks: "#e07b00", jawline: "#0b6e4f", neck: "#5d6d7e",
};
const CALENDAR_WEEKS = 6;

/** @param {App} app */
export async function historyScreen(app) {
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const [page, stats] = await Promise.all([
    app.client.sessions({ limit: 100 }),
    app.client.stats(tz, 8),
  ]);
  const rows = page.items.map((s) => h("tr", null,
    h("td", null, when(s.started_at || s.created_at)),
    h("td", null, s.program),
    h("td", null, s.state + (s.reason ? ` (${s.reason})` : "")),
    h("td", null, duration(s.delivered_s)),
    h("td", null, `${Math.round(Object.values(s.dose_uas_by_zone).reduce((a, b) => a + b, 0)
      / 1000)} mC`),
    h("td", null, h("a", { href: app.client.telemetryCsvUrl(s.id), download: `session-${s.id}.csv`,
      "aria-label": `CSV of the session of ${when(s.started_at || s.created_at)}` }, "CSV"))));
  const sessions = page.items.length
    ? h("div", { class: "scroll", tabindex: 0 }, h("table", { class: "sessions" },
      h("caption", null, `${page.total} session${page.total === 1 ? "" : "s"}`),
      h("thead", null, h("tr", null, ["When", "Program", "Outcome", "Output", "Dose", "Data"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", null, rows)))
    : h("p", null, "No session yet.");
  return h("section", null, h("h1", null, "History"),
    h("div", { class: "card" }, h("h2", null, "Streak"),
      h("p", null, `Current streak: ${stats.streak_current} day${stats.streak_current === 1 ? ""
        : "s"} · best: ${stats.streak_best}`),
      calendar(page.items)),
    h("div", { class: "card" }, h("h2", null, "Dose per zone per week"), doseChart(stats.weeks)),
    h("div", { class: "card" }, h("h2", null, "Sessions"), sessions));
}

/** @param {Date} d */
function dayKey(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${
    String(d.getDate()).padStart(2, "0")}`;
}

/** The last weeks, Monday first, days with a completed session marked.
 * @param {any[]} sessions */
function calendar(sessions) {
  const done = new Set(sessions.filter((s) => s.state === "completed")
    .map((s) => dayKey(new Date(s.started_at || s.created_at))));
  const used = new Set(sessions.map((s) => dayKey(new Date(s.started_at || s.created_at))));
  const today = new Date();
  const monday = new Date(today);
  monday.setDate(today.getDate() - ((today.getDay() + 6) % 7) - 7 * (CALENDAR_WEEKS - 1));
  const weeks = [];
  for (let w = 0; w < CALENDAR_WEEKS; w++) {
    const days = [];
    for (let d = 0; d < 7; d++) {
      const day = new Date(monday);
      day.setDate(monday.getDate() + w * 7 + d);
      const key = dayKey(day);
      const kind = done.has(key) ? "done" : used.has(key) ? "tried" : "none";
      const label = `${day.toLocaleDateString([], { weekday: "long", day: "numeric",
        month: "long" })}: ${kind === "done" ? "completed a session" : kind === "tried"
        ? "a session, not completed" : "no session"}`;
      days.push(h("td", { class: `day ${kind}${day > today ? " future" : ""}`,
        "aria-label": label, title: label }, String(day.getDate())));
    }
    weeks.push(h("tr", null, days));
  }
  return h("table", { class: "calendar" },
    h("caption", null, "The last six weeks: filled days had a completed session"),
    h("thead", null, h("tr", null, ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
      .map((d) => h("th", { scope: "col" }, d)))),
    h("tbody", null, weeks));
}

/** Stacked bars of µA·s per zone per ISO week, and the same figures as a table.
 * @param {any[]} weeks */
function doseChart(weeks) {
  if (!weeks.length) return h("p", null, "No completed or stopped session in the last weeks.");
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", { class: "chart", width: 600,
    height: 220, role: "img", "aria-label": "Dose per zone per week; the table below has the figures" }));
  const totals = weeks.map((w) => Object.values(w.dose_uas_by_zone)
    .reduce((/** @type {number} */ a, /** @type {number} */ b) => a + b, 0));
  const top = Math.max(1, ...totals);
  requestAnimationFrame(() => {
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.round((canvas.clientWidth || 600) * ratio);
    const hgt = Math.round(220 * ratio);
    canvas.width = w;
    canvas.height = hgt;
    const axis = 24 * ratio;
    const slot = w / weeks.length;
    const bar = Math.min(48 * ratio, slot * 0.6);
    ctx.font = `${12 * ratio}px system-ui, sans-serif`;
    ctx.fillStyle = "#333";
    weeks.forEach((week, i) => {
      let y = hgt - axis;
      const x = i * slot + (slot - bar) / 2;
      for (const zone of ZONES) {
        const value = week.dose_uas_by_zone[zone] || 0;
        const height = (value / top) * (hgt - axis - 8 * ratio);
        ctx.fillStyle = /** @type {any} */ (ZONE_COLOURS)[zone];
        ctx.fillRect(x, y - height, bar, height);
        y -= height;
      }
      ctx.fillStyle = "#333";
      ctx.fillText(`W${week.iso_week}`, x, hgt - 6 * ratio);
    });
  });
  const legend = h("ul", { class: "legend" }, ZONES.map((z) => h("li", null,
    h("span", { class: `swatch zone-${z}` }), zoneName(z))));
  const table = h("table", { class: "dose" },
    h("caption", null, "Dose per zone per week (millicoulombs, mC = 1000 µA·s)"),
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Week"),
      ZONES.map((z) => h("th", { scope: "col" }, zoneName(z))))),
    h("tbody", null, weeks.map((week) => h("tr", null,
      h("th", { scope: "row" }, `${week.iso_year}-W${week.iso_week}`),
      ZONES.map((z) => h("td", null, ((week.dose_uas_by_zone[z] || 0) / 1000).toFixed(1)))))));
  return h("div", null, canvas, legend, h("div", { class: "scroll", tabindex: 0 }, table));
}

