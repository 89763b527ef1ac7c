// mcgw-client.js: a standalone client for the mcgw hub's REST API (/api/v1) and its WebSocket
// (/api/v1/ws, docs/websocket.md), with reconnect and resume (from_seq) built in.
//
// One ES module, no dependency, no build step: import it as it is, in a browser or any runtime
// with fetch and WebSocket.
//
//   import { McgwClient } from "./mcgw-client.js";
//   const hub = new McgwClient({ baseUrl: "http://192.168.1.20:8420", token: "mcgw_…" });
//   const devices = await hub.devices();
//   const live = hub.live();
//   live.subscribe({ device: devices[0].address }, {
//     telemetry: (frame) => console.log(frame.seq, frame.current_mean_ua),
//     event: (message) => console.log(message.type, message),
//   });
//
// Credentials: an app passes its bearer token (`token`); it is sent in the Authorization header
// and, on the WebSocket, in the first `auth` message (never in a URL). The hub's own page passes
// no token: it pairs with `pair(code, name, { cookie: true })`, the hub sets an HttpOnly cookie
// that no script can read, and the browser sends it with every same-origin request.
//
// Errors: every failed call rejects with an ApiError carrying the hub's problem+json
// (`status`, `kind`, `problem.errors[]` naming each field).

/**
 * @typedef {{field: string, reason: string}} FieldError
 * @typedef {{type: string, title: string, status: number, detail: string,
 *   request_id?: string, errors?: FieldError[]}} Problem
 * @typedef {{accepted: boolean, accepted_at: string|null, version: string|null,
 *   current_version: string, notice: string}} Consent
 * @typedef {{id: number, name: string, is_admin: boolean, cap_ua: number|null,
 *   consent: Consent}} Me
 * @typedef {{address: string, name: string, state: string, managed: boolean,
 *   claimed: boolean, owned_by_you: boolean, bonded: boolean, rssi: number|null,
 *   battery_pct: number|null, contact_quality: number|null,
 *   active_session_id: string|null, last_seen: string|null}} Device
 * @typedef {{zone: string, waveform?: string, frequency_hz?: number, amplitude_ua: number,
 *   duty_pct?: number, duration_s: number, move_cue_s?: number}} ProgramStep
 * @typedef {{slug: string, name: string, description: string, builtin: boolean,
 *   owned_by_you: boolean, duration_s: number, steps: ProgramStep[]}} Program
 * @typedef {{slug: string, name: string, description?: string,
 *   steps: ProgramStep[]}} ProgramDraft
 * @typedef {{id: string, owner_id: number, device: string, program: string, level: number,
 *   state: string, reason: string|null, created_at: string, started_at: string|null,
 *   ended_at: string|null, planned_s: number, position_s: number|null, delivered_s: number,
 *   dose_uas_by_zone: Record<string, number>, limited_by_cap: boolean,
 *   live: boolean}} Session
 * @typedef {{items: Session[], total: number, limit: number, offset: number,
 *   next_offset: number|null}} SessionPage
 * @typedef {{iso_year: number, iso_week: number, week_start: string,
 *   minutes_by_zone: Record<string, number>, total_minutes: number,
 *   dose_uas_by_zone: Record<string, number>}} Week
 * @typedef {{streak_current: number, streak_best: number, last_day: string|null,
 *   weeks: Week[]}} Stats
 * @typedef {{id: number, user_id: number, name: string, created_at: string,
 *   revoked_at: string|null, last_used_at: string|null}} Token
 * @typedef {{id: number, name: string, is_admin: boolean, consent_accepted: boolean,
 *   cap_ua: number|null}} User
 * @typedef {{name: string, mode: string, address: string|null,
 *   state: "up"|"down"|"reopening"|"unknown", slots: number, slots_used: number,
 *   slots_free: number, adverts_per_s: number, connect_attempts: number,
 *   connect_failures: number, reopens: number, last_error: string|null}} Radio
 * @typedef {{address: string, name: string, state: string, radio: string|null,
 *   signal_dbm: number|null, mtu: number|null, reconnects: number,
 *   last_disconnect_reason: string|null}} DeviceLink
 * @typedef {{hub_id: string, version: string, hub_cap_ua: number,
 *   zone_caps_ua: Record<string, number>, user_cap_ua: number|null, max_session_min: number,
 *   step_min_s: number, step_max_s: number, frequency_min_hz: number,
 *   frequency_max_hz: number}} Hub
 * @typedef {{type: "telemetry", device: string, seq: number, session_id: string|null,
 *   zone: string|null, received_at: number, frame: number, device_time_ms: number,
 *   state: string, segment_id: number|null, segment_elapsed_ms: number,
 *   current_mean_ua: number, current_peak_ua: number, impedance_ohm: number|null,
 *   contact_quality: number, battery_pct: number, temperature_c: number,
 *   faults: string[]}} TelemetryFrame
 * @typedef {{type: string, subscription?: string|null, [key: string]: any}} ServerMessage
 * @typedef {{device?: string, session_id?: string}} Target
 * @typedef {{telemetry?: (frame: TelemetryFrame) => void,
 *   event?: (message: ServerMessage) => void, rateHz?: number}} Handlers
 * @typedef {"connecting"|"open"|"closed"} LinkState
 */

export const API = "/api/v1";

/** A failed call: the hub's problem+json, or a network failure (status 0). */
export class ApiError extends Error {
  /** @param {Problem} problem */
  constructor(problem) {
    super(problem.detail || problem.title);
    this.name = "ApiError";
    /** @type {Problem} */
    this.problem = problem;
    /** @type {number} */
    this.status = problem.status;
    /** The problem kind: "validation", "invalid-program", "not-found", … */
    this.kind = problem.type.replace("urn:mcgw:problem:", "");
  }

  /** The reason given for one field (`steps[1].amplitude_ua`, `code`), if any. */
  /** @param {string} field */
  fieldError(field) {
    const found = (this.problem.errors || []).find((e) => e.field === field);
    return found ? found.reason : null;
  }
}

/** A random UUID v4; crypto.randomUUID exists only on HTTPS pages, a LAN hub is often HTTP. */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class McgwClient {
  /**
   * @param {{baseUrl?: string, token?: string|null, timeoutMs?: number}} [options]
   *   `baseUrl`: the hub ("" = this page's origin); `token`: a bearer token, or null to use the
   *   hub page's cookie.
   */
  constructor({ baseUrl = "", token = null, timeoutMs = 10000 } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
    this.timeoutMs = timeoutMs;
  }

  /**
   * One REST call. Resolves with the parsed JSON (null for 204); rejects with ApiError.
   * @param {string} method
   * @param {string} path  under /api/v1, e.g. "/devices"
   * @param {{body?: any, query?: Record<string, any>, headers?: Record<string, string>,
   *   timeoutMs?: number}} [options]
   * @returns {Promise<any>}
   */
  async request(method, path, { body, query, headers = {}, timeoutMs } = {}) {
    let url = this.baseUrl + API + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value === undefined || value === null) continue;
        for (const one of Array.isArray(value) ? value : [value]) params.append(key, String(one));
      }
      const text = params.toString();
      if (text) url += "?" + text;
    }
    /** @type {Record<string, string>} */
    const sent = { Accept: "application/json", ...headers };
    if (this.token) sent.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs ?? this.timeoutMs);
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: sent,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
        signal: abort.signal,
      });
    } catch (error) {
      throw new ApiError({
        type: "urn:mcgw:problem:network",
        title: "Network error",
        status: 0,
        detail: `the hub did not answer (${error instanceof Error ? error.message : error})`,
      });
    } finally {
      clearTimeout(timer);
    }
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      throw new ApiError(
        typeof data === "object" && data
          ? data
          : { type: "about:blank", title: response.statusText, status: response.status,
              detail: String(data) },
      );
    }
    return data;
  }

  // --- pairing and the account ------------------------------------------------------------

  /**
   * Exchange a 6-digit pairing code. With `cookie: true` (the hub's own page) the token is set
   * as an HttpOnly cookie and the result's `token` is null; otherwise keep `token` safe.
   * @param {string} code @param {string} [clientName] @param {{cookie?: boolean}} [options]
   * @returns {Promise<{token: string|null, token_id: number, user: Me}>}
   */
  async pair(code, clientName = "phone", { cookie = false } = {}) {
    const result = await this.request("POST", "/pair", {
      body: { code, client_name: clientName, cookie },
    });
    if (result.token) this.token = result.token;
    return result;
  }
  /** @returns {Promise<Me>} */
  me() { return this.request("GET", "/me"); }
  /** @param {string} version @returns {Promise<Me>} */
  acceptConsent(version) {
    return this.request("POST", "/me/consent", { body: { version, accept: true } });
  }
  /** @param {number|null} capUa @returns {Promise<Me>} */
  setCap(capUa) { return this.request("PUT", "/me/cap", { body: { cap_ua: capUa } }); }
  /** Revoke this token (and clear the page's cookie). */
  async signOut() {
    await this.request("POST", "/me/sign-out");
    this.token = null;
  }
  /** @param {string} [tz] @param {number} [weeks] @returns {Promise<Stats>} */
  stats(tz = "UTC", weeks = 12) { return this.request("GET", "/me/stats", { query: { tz, weeks } }); }
  /** @returns {Promise<Hub>} */
  hub() { return this.request("GET", "/hub"); }

  // --- devices -------------------------------------------------------------------------------

  /** @returns {Promise<Device[]>} */
  devices() { return this.request("GET", "/devices"); }
  /** @param {number} [timeoutS] @returns {Promise<Device[]>} */
  scan(timeoutS = 2) {
    return this.request("POST", "/devices/scan", { body: { timeout_s: timeoutS },
      timeoutMs: (timeoutS + 10) * 1000 });
  }
  /** @param {string} address @returns {Promise<Device>} */
  claim(address) { return this.request("POST", `/devices/${encodeURIComponent(address)}/claim`); }
  /** @param {string} address @param {string} name @returns {Promise<Device>} */
  rename(address, name) {
    return this.request("PATCH", `/devices/${encodeURIComponent(address)}`, { body: { name } });
  }
  /** @param {string} address */
  forget(address) { return this.request("DELETE", `/devices/${encodeURIComponent(address)}`); }

  // --- programs ------------------------------------------------------------------------------

  /** @returns {Promise<Program[]>} */
  programs() { return this.request("GET", "/programs"); }
  /** Check a draft against every cap without saving it (rejects with the fields' errors).
   * @param {ProgramDraft} draft @returns {Promise<Program>} */
  checkProgram(draft) { return this.request("POST", "/programs/check", { body: draft }); }
  /** @param {ProgramDraft} draft @returns {Promise<Program>} */
  createProgram(draft) { return this.request("POST", "/programs", { body: draft }); }
  /** @param {string} slug */
  deleteProgram(slug) { return this.request("DELETE", `/programs/${encodeURIComponent(slug)}`); }

  // --- sessions ------------------------------------------------------------------------------

  /**
   * Start a session. A retry with the same `idempotencyKey` never starts a second one.
   * @param {{device: string, program: string, level?: number, idempotencyKey?: string}} start
   * @returns {Promise<Session>}
   */
  startSession({ device, program, level = 3, idempotencyKey = uuid4() }) {
    return this.request("POST", "/sessions", {
      body: { device, program, level },
      headers: { "Idempotency-Key": idempotencyKey },
    });
  }
  /** @param {Record<string, any>} [query] @returns {Promise<SessionPage>} */
  sessions(query = {}) { return this.request("GET", "/sessions", { query }); }
  /** @param {string} id @returns {Promise<Session & {events: any[]}>} */
  session(id) { return this.request("GET", `/sessions/${encodeURIComponent(id)}`); }
  /** Stop always wins and is idempotent. @param {string} id @returns {Promise<Session>} */
  stop(id) { return this.request("POST", `/sessions/${encodeURIComponent(id)}/stop`); }
  /** @param {string} id @returns {Promise<Session>} */
  pause(id) { return this.request("POST", `/sessions/${encodeURIComponent(id)}/pause`); }
  /** @param {string} id @returns {Promise<Session>} */
  resume(id) { return this.request("POST", `/sessions/${encodeURIComponent(id)}/resume`); }
  /** @param {string} id @param {number} level 1-5 @returns {Promise<Session>} */
  setLevel(id, level) {
    return this.request("PUT", `/sessions/${encodeURIComponent(id)}/level`, { body: { level } });
  }
  /** The URL of a session's recorded telemetry as CSV (a link the page's cookie opens).
   * @param {string} id @param {number} [everyMs] */
  telemetryCsvUrl(id, everyMs = 1000) {
    return `${this.baseUrl}${API}/sessions/${encodeURIComponent(id)}/telemetry?format=csv&every_ms=${everyMs}`;
  }

  // --- tokens, users, admin ------------------------------------------------------------------

  /** @param {number} [userId] admins: another user's @returns {Promise<Token[]>} */
  tokens(userId) { return this.request("GET", "/tokens", { query: { user_id: userId } }); }
  /** @param {number} id */
  revokeToken(id) { return this.request("DELETE", `/tokens/${id}`); }
  /** @returns {Promise<User[]>} */
  users() { return this.request("GET", "/users"); }
  /** @param {number} id @param {boolean} isAdmin @returns {Promise<User>} */
  setAdmin(id, isAdmin) { return this.request("PATCH", `/users/${id}`, { body: { is_admin: isAdmin } }); }
  /** @param {{name?: string, user_id?: number, is_admin?: boolean}} body
   * @returns {Promise<{code: string, expires_at: string, link: string}>} */
  pairingCode(body) { return this.request("POST", "/pairing-codes", { body }); }
  /** @returns {Promise<Record<string, any>>} */
  hubSettings() { return this.request("GET", "/hub/settings"); }
  /** Admins: each radio's state, slots and counters, each device's link.
   * @returns {Promise<{radios: Radio[], devices: DeviceLink[]}>} */
  radios() { return this.request("GET", "/radios"); }

  /**
   * The live connection: one WebSocket, reconnected with backoff, subscriptions resumed.
   * @param {{heartbeatS?: number}} [options]
   */
  live(options = {}) { return new LiveConnection(this, options); }
}

const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;
const COMMAND_TIMEOUT_MS = 2000;

/**
 * One WebSocket to the hub. It connects at once and reconnects after any drop (backoff 0.25 s
 * doubling to 5 s, with jitter); after a reconnect each subscription is made again with
 * `from_seq` = the last frame's `seq` + 1, so the hub replays what was missed (docs/websocket.md
 * "Resuming"). A `gap` message reaches the `event` handler when the hub no longer held some.
 * Listen with addEventListener("state", …) for "connecting" | "open" | "closed" (detail: the
 * LinkState) and "unauthorized" (the token was refused or revoked: it does not reconnect).
 */
export class LiveConnection extends EventTarget {
  /** @param {McgwClient} client @param {{heartbeatS?: number}} options */
  constructor(client, { heartbeatS = 20 } = {}) {
    super();
    this.client = client;
    this.heartbeatS = heartbeatS;
    /** @type {LinkState} */
    this.state = "connecting";
    /** @type {Map<string, {target: Target, handlers: Handlers, lastSeq: number|null,
     *   subscription: string|null}>} */
    this.subs = new Map();
    /** @type {Map<string, {resolve: (m: any) => void, reject: (e: any) => void,
     *   timer: any}>} */
    this.pending = new Map();
    /** @type {WebSocket|null} */
    this.ws = null;
    this.closed = false;
    this.attempt = 0;
    this.nextId = 1;
    this.connect();
  }

  /** True once the hub said hello on the current socket. */
  get ready() { return this.state === "open"; }

  connect() {
    if (this.closed) return;
    this.setState("connecting");
    const base = this.client.baseUrl || location.origin;
    const url = base.replace(/^http/, "ws") + API + "/ws";
    const ws = new WebSocket(url, ["mcgw.v1"]);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.client.token) {
        this.send({ type: "auth", token: this.client.token, heartbeat_s: this.heartbeatS });
      }
    });
    ws.addEventListener("message", (event) => this.receive(ws, String(event.data)));
    ws.addEventListener("close", (event) => this.dropped(ws, event.code));
  }

  /** @param {LinkState} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  /** @param {WebSocket} ws @param {number} code */
  dropped(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    for (const [, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("the connection to the hub dropped"));
    }
    this.pending.clear();
    for (const sub of this.subs.values()) sub.subscription = null;
    this.setState("closed");
    if (code === 4401) {
      this.closed = true;
      this.dispatchEvent(new CustomEvent("unauthorized"));
      return;
    }
    if (this.closed) return;
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    setTimeout(() => this.connect(), delay * (0.75 + Math.random() * 0.5));
  }

  /** @param {any} message */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** @param {WebSocket} ws @param {string} raw */
  receive(ws, raw) {
    if (ws !== this.ws) return;
    /** @type {ServerMessage} */
    const message = JSON.parse(raw);
    switch (message.type) {
      case "telemetry": {
        for (const sub of this.subs.values()) {
          if (sub.subscription && this.matches(sub, message)) {
            if (sub.lastSeq === null || message.seq > sub.lastSeq) {
              sub.lastSeq = message.seq;
              sub.handlers.telemetry?.(/** @type {TelemetryFrame} */ (message));
            }
          }
        }
        return;
      }
      case "hello":
        this.attempt = 0;
        this.setState("open");
        for (const [key, sub] of this.subs) this.resubscribe(key, sub);
        return;
      case "ping":
        this.send({ type: "pong" });
        return;
      case "ack":
      case "error": {
        const waiter = message.id ? this.pending.get(message.id) : undefined;
        if (waiter) {
          this.pending.delete(message.id);
          clearTimeout(waiter.timer);
          if (message.type === "ack") waiter.resolve(message);
          else waiter.reject(new ApiError(message.problem));
        }
        return;
      }
      default: {
        const sub = [...this.subs.values()].find(
          (s) => s.subscription !== null && s.subscription === message.subscription,
        );
        if (sub) sub.handlers.event?.(message);
        this.dispatchEvent(new CustomEvent("message", { detail: message }));
      }
    }
  }

  /** @param {{target: Target}} sub @param {ServerMessage} frame */
  matches(sub, frame) {
    if (sub.target.session_id) return frame.session_id === sub.target.session_id;
    return frame.device === sub.target.device;
  }

  /**
   * Send a message with an id and wait for its ack (rejects with ApiError on an error reply,
   * or an Error when the socket is down or no answer came in time).
   * @param {Record<string, any>} message @param {number} [timeoutMs]
   */
  request(message, timeoutMs = COMMAND_TIMEOUT_MS) {
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this.ready || !this.send({ ...message, id })) {
        reject(new Error("not connected to the hub"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error("the hub did not answer in time"));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  /**
   * Watch a device or a live session until unsubscribe(). Survives reconnects (resumed with
   * from_seq). Returns a key for unsubscribe().
   * @param {Target} target @param {Handlers} handlers
   */
  subscribe(target, handlers) {
    const key = target.session_id ? `s:${target.session_id}` : `d:${target.device}`;
    const sub = { target, handlers, lastSeq: null, subscription: null };
    this.subs.set(key, sub);
    if (this.ready) this.resubscribe(key, sub);
    return key;
  }

  /** @param {string} key @param {any} sub */
  async resubscribe(key, sub) {
    /** @type {Record<string, any>} */
    const message = { type: "subscribe", ...sub.target };
    if (sub.lastSeq !== null) message.from_seq = sub.lastSeq + 1;
    if (sub.handlers.rateHz) message.rate_hz = sub.handlers.rateHz;
    try {
      const ack = await this.request(message);
      if (this.subs.get(key) === sub) sub.subscription = ack.subscription;
      else this.send({ type: "unsubscribe", subscription: ack.subscription });
    } catch (error) {
      sub.handlers.event?.({ type: "subscribe_failed", error });
    }
  }

  /** @param {string} key */
  unsubscribe(key) {
    const sub = this.subs.get(key);
    this.subs.delete(key);
    if (sub && sub.subscription) this.send({ type: "unsubscribe", subscription: sub.subscription });
  }

  /**
   * stop / pause / resume / set_level over the socket; the session as the hub now has it.
   * @param {"stop"|"pause"|"resume"|"set_level"} type @param {string} sessionId
   * @param {Record<string, any>} [extra] @returns {Promise<Session>}
   */
  async command(type, sessionId, extra = {}) {
    const ack = /** @type {any} */ (await this.request({ type, session_id: sessionId, ...extra }));
    return ack.session;
  }

  /** Close for good (no reconnect). */
  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  }
}

/**
 * Stop a session by the fastest way that works: the socket when it is up (answer within
 * `timeoutMs`), else REST. A STOP must never wait on a socket that is down.
 * @param {McgwClient} client @param {LiveConnection|null} live @param {string} sessionId
 * @returns {Promise<Session>}
 */
export async function stopSession(client, live, sessionId, timeoutMs = 1500) {
  if (live && live.ready) {
    try {
      return await live.request({ type: "stop", session_id: sessionId }, timeoutMs)
        .then((/** @type {any} */ ack) => ack.session);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) throw error;
    }
  }
  return client.stop(sessionId);
}
