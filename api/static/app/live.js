// The live session screen: the face with the zone being treated, "move" cues (visual, and
// vibration and a beep where the browser allows), the live current trace, contact quality
// with the gel hint, time left, intensity, Pause and Resume. Stop is in the Stop bar (app.js),
// on screen whenever a session runs.
//
// Telemetry arrives at up to 50 Hz; handlers only store it and ask for one animation frame,
// and everything is drawn once per displayed frame (requestAnimationFrame), so a burst of
// frames never queues work and the socket is always read at once.

import { ApiError } from "./mcgw-client.js";
import { clock, fill, h, message, svg, zoneName } from "./ui.js";

/** @typedef {import("./app.js").App} App */

const TRACE_SECONDS = 10;
const TRACE_POINTS = 50 * TRACE_SECONDS;
const POOR_CONTACT = 40;
const CUE_SHOW_MS = 2500;
const READOUT_MS = 100;
/** Numbers are rewritten at most 10 times a second (no one reads faster), the trace every
 * displayed frame: text changes cost the page a layout and a paint each. */
const OPEN = ["pending", "running", "paused"];

/** What the device and its session look like now; written by the socket, read per frame. */
const store = {
  /** @type {string|null} */ address: null,
  /** @type {string|null} */ key: null,
  trace: new Float32Array(TRACE_POINTS),
  traceCount: 0,
  /** @type {any} */ last: null,
  /** @type {any} */ session: null,
  sessionAt: 0,
  /** @type {{text: string, at: number}|null} */ cue: null,
  /** @type {string|null} */ hint: null,
  frames: 0,
  /** @type {(() => void)|null} */ draw: null,
  scheduled: false,
};

function schedule() {
  if (store.scheduled || !store.draw) return;
  store.scheduled = true;
  requestAnimationFrame(() => {
    store.scheduled = false;
    if (store.draw) store.draw();
  });
}

/**
 * Watch a device on the app's socket (resumed after a reconnect). Called before a start, so
 * the first cue is not missed, and by the live screen.
 * @param {App} app @param {string} address
 */
export async function watchDevice(app, address) {
  if (!app.live) throw new Error("not signed in");
  if (store.address === address && store.key) return;
  if (store.key) app.live.unsubscribe(store.key);
  store.address = address;
  store.traceCount = 0;
  store.last = null;
  store.cue = null;
  store.hint = null;
  store.key = app.live.subscribe({ device: address }, {
    telemetry: (frame) => {
      store.trace[store.traceCount % TRACE_POINTS] = frame.current_mean_ua;
      store.traceCount += 1;
      store.frames += 1;
      store.last = frame;
      schedule();
    },
    event: (event) => onEvent(app, event),
  });
  // Wait (briefly) for the subscription's ack, so a start right after it is watched.
  const deadline = performance.now() + 2000;
  while (performance.now() < deadline) {
    const sub = app.live.subs.get(/** @type {string} */ (store.key));
    if (sub && sub.subscription) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** @param {App} app @param {any} event */
function onEvent(app, event) {
  const session = store.session;
  if (event.type === "session_state") {
    if (session && event.session_id === session.id) {
      store.session = { ...session, state: event.state, reason: event.reason };
      store.sessionAt = performance.now();
      if (event.state === "running") store.hint = null;
      app.setActive(store.session);
      resync(app, session.id);
    } else if (OPEN.includes(event.state)) {
      resync(app, event.session_id);
    }
  } else if (event.type === "session_notice") {
    const detail = event.detail || {};
    if (event.notice === "move") {
      store.cue = {
        text: detail.cue === "next zone" ? `Move to the ${zoneName(detail.zone)}`
          : `Move: keep gliding over the ${zoneName(detail.zone)}`,
        at: performance.now(),
      };
      nudge();
    } else if (event.notice === "contact_lost") {
      store.hint = "No skin contact: apply more gel and put the device back on your skin.";
    } else if (event.notice === "apply_gel") {
      store.hint = "Apply more gel: the contact is poor.";
    } else if (event.notice === "contact_restored") {
      store.hint = null;
    } else if (event.notice === "intensity" && session) {
      store.session = { ...session, level: detail.to };
    }
  }
  schedule();
}

/** @param {App} app @param {string} id */
async function resync(app, id) {
  try {
    const fresh = await app.client.session(id);
    if (!store.session || store.session.id === id) {
      store.session = fresh;
      store.sessionAt = performance.now();
      app.setActive(fresh);
      schedule();
    }
  } catch {
    // Kept as it was; the next event asks again.
  }
}

/** A cue the hand can feel and hear, where the browser allows it. */
function nudge() {
  if (navigator.vibrate) {
    try {
      navigator.vibrate(150);
    } catch {
      // Not allowed here.
    }
  }
  const audio = /** @type {any} */ (window).mcgwAudio;
  if (audio) {
    try {
      audio.resume();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      gain.gain.value = 0.08;
      osc.frequency.value = 880;
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.12);
    } catch {
      // No sound then.
    }
  }
}

/** Seconds left of the session, counting on from its last known position while it runs. */
function timeLeft() {
  const s = store.session;
  if (!s) return 0;
  let position = s.position_s ?? s.delivered_s ?? 0;
  if (s.state === "running") position += (performance.now() - store.sessionAt) / 1000;
  return Math.max(0, s.planned_s - position);
}

/** The face, one shape per zone (data-zone), the treated one highlighted. */
function face() {
  const zone = (/** @type {string} */ name, /** @type {SVGElement[]} */ ...shapes) =>
    svg("g", { class: "zone", "data-zone": name }, ...shapes);
  return svg("svg", { viewBox: "0 0 200 260", class: "face", role: "img",
    "aria-label": "Face" },
  zone("neck", svg("rect", { x: 72, y: 196, width: 56, height: 60, rx: 8 })),
  svg("ellipse", { class: "head", cx: 100, cy: 110, rx: 70, ry: 92 }),
  zone("forehead", svg("ellipse", { cx: 100, cy: 50, rx: 48, ry: 18 })),
  zone("brow", svg("ellipse", { cx: 72, cy: 80, rx: 18, ry: 5 }),
    svg("ellipse", { cx: 128, cy: 80, rx: 18, ry: 5 })),
  zone("eye_area", svg("ellipse", { cx: 72, cy: 98, rx: 17, ry: 9 }),
    svg("ellipse", { cx: 128, cy: 98, rx: 17, ry: 9 })),
  zone("cheeks", svg("ellipse", { cx: 64, cy: 138, rx: 17, ry: 20 }),
    svg("ellipse", { cx: 136, cy: 138, rx: 17, ry: 20 })),
  zone("jawline", svg("path", { d: "M40 150 Q60 205 100 204 Q140 205 160 150",
    fill: "none" })),
  svg("path", { class: "feature", d: "M100 105 L94 140 L104 142", fill: "none" }),
  svg("path", { class: "feature", d: "M84 165 Q100 174 116 165", fill: "none" }));
}

/** @param {App} app @param {string} param a session id, or empty for the active session */
export async function liveScreen(app, param) {
  await app.refreshActive();
  const id = param || app.active?.id;
  if (!id) {
    return h("section", null, h("h1", null, "Live session"),
      h("p", null, "No session is running. ", h("a", { href: "#/programs" }, "Pick a program"),
        " to start one."));
  }
  let session;
  try {
    session = await app.client.session(id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      return h("section", null, h("h1", null, "Live session"),
        h("p", null, "No such session."));
    }
    throw error;
  }
  if (!OPEN.includes(session.state)) {
    return h("section", null, h("h1", null, "Live session"), ended(session));
  }
  store.session = session;
  store.sessionAt = performance.now();
  app.setActive(session);
  await watchDevice(app, session.device);

  const state = h("p", { class: "state", role: "status" });
  const cue = h("p", { class: "cue", role: "status", "aria-live": "assertive" });
  const hint = h("p", { class: "gel-hint", role: "alert" });
  const drawing = face();
  const current = h("output", { class: "big" });
  const contact = h("meter", { min: 0, max: 100, low: POOR_CONTACT, optimum: 100, value: 0,
    "aria-label": "Contact quality" });
  const contactText = h("output");
  const left = h("output", { class: "big" });
  const levelOut = h("output", { class: "big" });
  const zoneOut = h("output");
  const battery = h("output");
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", { class: "trace", role: "img",
    "aria-label": "Live current trace, last 10 seconds", width: 600, height: 160 }));
  const error = h("p", { class: "error", role: "alert" });

  /** @param {"pause"|"resume"|"set_level"} type @param {Record<string, any>} [extra] */
  async function command(type, extra = {}) {
    error.textContent = "";
    const s = store.session;
    try {
      let updated;
      if (app.live && app.live.ready) {
        updated = await app.live.command(type, s.id, extra);
      } else if (type === "pause") updated = await app.client.pause(s.id);
      else if (type === "resume") updated = await app.client.resume(s.id);
      else updated = await app.client.setLevel(s.id, extra.level);
      store.session = updated;
      store.sessionAt = performance.now();
      app.setActive(updated);
      schedule();
    } catch (e) {
      error.textContent = message(e);
    }
  }
  const down = h("button", { type: "button", "aria-label": "Intensity down",
    onclick: () => command("set_level", { level: store.session.level - 1 }) }, "−");
  const up = h("button", { type: "button", "aria-label": "Intensity up",
    onclick: () => command("set_level", { level: store.session.level + 1 }) }, "+");
  const pause = h("button", { type: "button", onclick: () => command("pause") }, "Pause");
  const resume = h("button", { type: "button", onclick: () => command("resume") }, "Resume");

  const section = h("section", { class: "live" },
    h("h1", null, "Live session"), state, cue, hint,
    h("div", { class: "live-grid" },
      h("figure", { class: "face-box" }, drawing, h("figcaption", null, "Zone: ", zoneOut)),
      h("dl", { class: "readings" },
        h("div", null, h("dt", null, "Time left"), h("dd", null, left)),
        h("div", null, h("dt", null, "Current (µA)"), h("dd", null, current)),
        h("div", null, h("dt", null, "Contact"), h("dd", null, contact, " ", contactText)),
        h("div", null, h("dt", null, "Intensity"), h("dd", null, levelOut)),
        h("div", null, h("dt", null, "Battery"), h("dd", null, battery)))),
    canvas,
    h("div", { class: "controls-row" }, down, up, pause, resume),
    error);

  const context = canvas.getContext("2d");
  /** Text and attributes are written only when they change: each write costs a style pass. */
  const shown = new Map();
  /** @param {Element} el @param {string} text */
  const text = (el, text) => {
    if (shown.get(el) !== text) {
      shown.set(el, text);
      el.textContent = text;
    }
  };
  /** @param {HTMLButtonElement|HTMLElement} el @param {boolean} off */
  const disable = (el, off) => {
    if (/** @type {HTMLButtonElement} */ (el).disabled !== off) {
      /** @type {HTMLButtonElement} */ (el).disabled = off;
    }
  };
  let shownZone = "";
  let shownContact = -1;
  let cueOn = false;
  let readAt = 0;
  store.draw = () => {
    const s = store.session;
    const frame = store.last;
    text(state, `${s.program} · ${s.state}${s.reason && s.state !== "running"
      ? ` (${s.reason})` : ""}`);
    const open = OPEN.includes(s.state);
    disable(pause, s.state !== "running");
    disable(resume, s.state !== "paused");
    disable(down, !open || s.level <= 1);
    disable(up, !open || s.level >= 5);
    text(levelOut, `${s.level} of 5`);
    text(left, clock(timeLeft()));
    const showCue = Boolean(store.cue && performance.now() - store.cue.at < CUE_SHOW_MS);
    text(cue, showCue && store.cue ? store.cue.text : "");
    if (showCue !== cueOn) {
      cue.classList.toggle("on", showCue);
      cueOn = showCue;
    }
    const now = performance.now();
    if (frame && now - readAt >= READOUT_MS) {
      readAt = now;
      text(current, String(frame.current_mean_ua));
      if (frame.contact_quality !== shownContact) {
        shownContact = frame.contact_quality;
        /** @type {HTMLMeterElement} */ (contact).value = frame.contact_quality;
        contactText.textContent = `${frame.contact_quality}%`;
      }
      text(battery, `${frame.battery_pct}%`);
      if (frame.zone !== shownZone) {
        shownZone = frame.zone;
        text(zoneOut, zoneName(frame.zone));
        for (const g of drawing.querySelectorAll(".zone")) {
          g.classList.toggle("active", g.getAttribute("data-zone") === frame.zone);
        }
        drawing.setAttribute("aria-label", `Face: treating the ${zoneName(frame.zone)}`);
      }
      if (!store.hint && open && frame.contact_quality < POOR_CONTACT) {
        store.hint = "Apply more gel: the contact is poor.";
      }
    }
    text(hint, store.hint || "");
    if (hint.hidden !== !store.hint) hint.hidden = !store.hint;
    if (context) drawTrace(context, canvas);
    if (!open) {
      fill(section, h("h1", null, "Live session"), ended(s));
      store.draw = null;
    }
  };
  const ticker = setInterval(schedule, 500); // time left and the cue's fade
  app.onLeave(() => {
    clearInterval(ticker);
    store.draw = null;
  });
  const onSession = (/** @type {Event} */ event) => {
    const s = /** @type {CustomEvent} */ (event).detail;
    if (store.session && s.id === store.session.id) {
      store.session = s;
      store.sessionAt = performance.now();
      schedule();
    }
  };
  app.events.addEventListener("session", onSession);
  app.onLeave(() => app.events.removeEventListener("session", onSession));
  schedule();
  return section;
}

/** @param {any} s */
function ended(s) {
  return h("div", { class: "card" },
    h("p", { class: "state", role: "status" }, `Session ${s.state}${s.reason ? `: ${s.reason}` : ""}.`),
    h("p", null, h("a", { href: "#/history" }, "See it in your history"), " · ",
      h("a", { href: "#/programs" }, "Start another")));
}

/** @param {CanvasRenderingContext2D} ctx @param {HTMLCanvasElement} canvas */
function drawTrace(ctx, canvas) {
  const width = canvas.clientWidth || canvas.width;
  const ratio = window.devicePixelRatio || 1;
  const w = Math.round(width * ratio);
  const hgt = Math.round((canvas.clientHeight || 160) * ratio);
  if (canvas.width !== w || canvas.height !== hgt) {
    canvas.width = w;
    canvas.height = hgt;
  }
  ctx.clearRect(0, 0, w, hgt);
  const n = Math.min(store.traceCount, TRACE_POINTS);
  const top = 500;
  ctx.strokeStyle = "#d8dee4";
  ctx.lineWidth = ratio;
  ctx.beginPath();
  for (const ua of [100, 200, 300, 400]) {
    const y = hgt - (ua / top) * hgt;
    ctx.moveTo(0, y);
    ctx.lineTo(w, y);
  }
  ctx.stroke();
  if (n < 2) return;
  ctx.strokeStyle = "#0b6e4f";
  ctx.lineWidth = 2 * ratio;
  ctx.beginPath();
  const start = store.traceCount - n;
  for (let i = 0; i < n; i++) {
    const value = store.trace[(start + i) % TRACE_POINTS];
    const x = ((TRACE_POINTS - n + i) / (TRACE_POINTS - 1)) * w;
    const y = hgt - (Math.min(value, top) / top) * hgt;
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  }
  ctx.stroke();
}

/** For tests and benchmarks: frames received since the page loaded. */
export function framesReceived() { return store.frames; }
