/**
 * Proctoring student client, protocol v1 (docs/protocol.md). A plain ES module, no dependencies.
 *
 *   import { StudentClient } from "/client/student.js";
 *   const client = new StudentClient({
 *     url: "ws://127.0.0.1:8080/ws",        // the gateway's WebSocket endpoint
 *     token: studentJwt,                     // from the LMS
 *     awayDebounceMs: 1500,                  // a shorter blur (an OS notification) is not "away"
 *     onMessage(text, event) {},             // proctor.message
 *     onAnnouncement(text, event) {},        // proctor.announcement
 *     onPause(reason, event) {},             // block the exam UI
 *     onResume(event) {},                    // unblock; the deadline moved later
 *     onTimeExtended(seconds, timeEnd, event) {},
 *     onConnectionChange(state, detail) {},  // "connecting" | "open" | "closed" | "superseded" | "unauthorized"
 *     onError(errorFrame) {},                // refused events (client bugs), for logging
 *   });
 *   client.start();
 *   client.progress({ question_current: 3, answered: 2, total: 20, time_remaining_s: 1700 });
 *   client.answer(3, "choice-2");
 *   client.submit(17.5);
 *   client.stop();
 *
 * State the page can read: `client.paused`, `client.timeEnd` (epoch ms, server clock corrected
 * to the local clock, or null), `client.extendedS`, `client.status`, `client.connection`.
 *
 * Guarantees: every event gets a unique `id` and an increasing `seq` (kept in sessionStorage per
 * attempt, so a reload continues the count); it stays in an unacked store (also in
 * sessionStorage) until the server's `ack`, and is resent unchanged after every reconnect.
 * Reconnects back off exponentially from 0.5 s to 30 s with full jitter, so a gateway restart
 * does not become a reconnect storm.
 */

const BACKOFF_BASE_S = 0.5;
const BACKOFF_CAP_S = 30;
const STABLE_AFTER_MS = 30_000;

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

export function backoffDelayMs(failures, retryAfterMs = 0, random = Math.random) {
  const capS = Math.min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** failures);
  return Math.max(random() * capS * 1000, retryAfterMs);
}

export class StudentClient {
  constructor(options) {
    this.options = { awayDebounceMs: 1500, storage: globalThis.sessionStorage, ...options };
    this.claims = claimsOf(options.token);
    this.attempt = this.claims.attempt || "attempt";
    this.storageKey = `proctor:${this.attempt}`;
    this.paused = false;
    this.timeEnd = null;
    this.extendedS = 0;
    this.status = "active";
    this.connection = "closed";
    this.clockOffsetMs = 0;
    this.heartbeatIntervalS = 5;
    this.seenNotices = new Set();
    this.failures = 0;
    this.retryAfterMs = 0;
    this.ws = null;
    this.stopped = true;
    this._timers = { heartbeat: null, reconnect: null, away: null, stable: null };
    this._load();
    this._onVisibility = () => this._focusChanged();
  }

  // -- public API ------------------------------------------------------------------------

  start() {
    this.stopped = false;
    document.addEventListener("visibilitychange", this._onVisibility);
    window.addEventListener("focus", this._onVisibility);
    window.addEventListener("blur", this._onVisibility);
    window.addEventListener("pagehide", () => this.stop());
    this.status = this._pageLooksActive() ? "active" : "away";
    this._connect();
  }

  stop() {
    this.stopped = true;
    document.removeEventListener("visibilitychange", this._onVisibility);
    window.removeEventListener("focus", this._onVisibility);
    window.removeEventListener("blur", this._onVisibility);
    for (const key of Object.keys(this._timers)) clearTimeout(this._timers[key]);
    if (this.ws) this.ws.close(1000);
    this._setConnection("closed");
  }

  progress({ question_current = null, answered, total, time_remaining_s = null }) {
    const frame = { type: "progress", answered, total };
    if (question_current !== null) frame.question_current = question_current;
    if (time_remaining_s !== null) frame.time_remaining_s = Math.max(0, Math.floor(time_remaining_s));
    return this._event(frame);
  }

  answer(question, answer) {
    return this._event({ type: "answer", question, answer: String(answer) });
  }

  submit(score = null) {
    const frame = { type: "submit" };
    if (score !== null) frame.score = score;
    return this._event(frame);
  }

  /** Remaining milliseconds by the local clock, frozen while paused; null without a deadline. */
  remainingMs(now = Date.now()) {
    if (this.timeEnd === null) return null;
    const at = this.paused && this.pausedAtLocal ? this.pausedAtLocal : now;
    return Math.max(0, this.timeEnd - at);
  }

  get unackedCount() {
    return this.unacked.length;
  }

  // -- events: numbering, the unacked store, resending -----------------------------------

  _event(body) {
    this.seq += 1;
    const rand = Math.random().toString(16).slice(2, 8);
    const frame = { ...body, id: `${this.attempt}-${this.seq}-${rand}`, seq: this.seq, ts: Date.now() };
    this.unacked.push(frame);
    this._save();
    if (this.connection === "open") this._send(frame);
    return frame.id;
  }

  _load() {
    let saved = {};
    try {
      saved = JSON.parse(this.options.storage?.getItem(this.storageKey) || "{}");
    } catch {
      saved = {};
    }
    this.seq = Number.isInteger(saved.seq) ? saved.seq : 0;
    this.unacked = Array.isArray(saved.unacked) ? saved.unacked : [];
  }

  _save() {
    try {
      this.options.storage?.setItem(this.storageKey, JSON.stringify({ seq: this.seq, unacked: this.unacked }));
    } catch {
      // Storage full or disabled: events are still kept in memory until acked.
    }
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      this._armHeartbeat();
    }
  }

  // Any frame keeps the student online (protocol §8), so a heartbeat goes out only after a
  // whole interval with nothing else sent: never more than one interval of silence, and no
  // heartbeat beside a page that is sending anyway.
  _armHeartbeat() {
    clearTimeout(this._timers.heartbeat);
    this._timers.heartbeat = setTimeout(
      () => this._send({ type: "heartbeat" }),
      this.heartbeatIntervalS * 1000,
    );
  }

  // -- focus: Page Visibility API plus window focus, debounced ---------------------------

  _pageLooksActive() {
    return document.visibilityState === "visible" && document.hasFocus();
  }

  _focusChanged() {
    const wanted = this._pageLooksActive() ? "active" : "away";
    clearTimeout(this._timers.away);
    if (wanted === this.status) return;
    if (wanted === "active") {
      this._setStatus(wanted);
      return;
    }
    // Only a blur that lasts is reported: a notification popping up briefly is not "away".
    this._timers.away = setTimeout(() => {
      if (!this._pageLooksActive()) this._setStatus("away");
    }, this.options.awayDebounceMs);
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this._event({ type: "status", status });
  }

  // -- connection ------------------------------------------------------------------------

  _setConnection(state, detail = {}) {
    this.connection = state;
    this.options.onConnectionChange?.(state, detail);
  }

  _connect() {
    if (this.stopped) return;
    this._setConnection("connecting");
    const ws = new WebSocket(`${this.options.url}?token=${encodeURIComponent(this.options.token)}`);
    this.ws = ws;
    ws.onmessage = (message) => this._onFrame(JSON.parse(message.data));
    ws.onclose = (close) => this._onClose(ws, close);
  }

  _onClose(ws, close) {
    if (ws !== this.ws) return;
    clearTimeout(this._timers.heartbeat);
    clearTimeout(this._timers.stable);
    if (this.stopped) return;
    if (close.code === 4009) return this._setConnection("superseded", { code: close.code });
    if (close.code === 4401) return this._setConnection("unauthorized", { code: close.code, reason: close.reason });
    const delay = backoffDelayMs(this.failures, this.retryAfterMs);
    this.failures += 1;
    this.retryAfterMs = 0;
    this._setConnection("closed", { code: close.code, reason: close.reason, retryInMs: delay });
    this._timers.reconnect = setTimeout(() => this._connect(), delay);
  }

  _onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        return this._onWelcome(frame);
      case "ack":
        this.unacked = this.unacked.filter((f) => f.id !== frame.id);
        return this._save();
      case "error":
        return this._onError(frame);
      case "notice":
        return this._onNotice(frame.event);
      default:
        return undefined; // unknown frame types are ignored (protocol §1)
    }
  }

  _onWelcome(frame) {
    if (frame.v !== 1) return this.ws.close(1000);
    this.clockOffsetMs = Date.now() - frame.server_time;
    this.heartbeatIntervalS = frame.heartbeat_interval_s;
    const session = frame.student || {};
    const wasPaused = this.paused;
    this.paused = Boolean(session.paused);
    this.pausedAtLocal = this.paused ? Date.now() : null;
    this.timeEnd = session.time_end != null ? session.time_end + this.clockOffsetMs : this.timeEnd;
    this.extendedS = session.extended_s || 0;
    this.seq = Math.max(this.seq, session.last_client_seq || 0);
    this._save();
    this._setConnection("open", { conn: frame.conn });
    this._send({ type: "heartbeat" });
    this._timers.stable = setTimeout(() => (this.failures = 0), STABLE_AFTER_MS);
    for (const pending of this.unacked) this._send(pending);
    // The focus may have changed while disconnected; the server must know the current one.
    this._focusChanged();
    if (this.paused && !wasPaused) this.options.onPause?.("", null);
    if (!this.paused && wasPaused) this.options.onResume?.(null);
    this.options.onTimeExtended?.(0, this.timeEnd, null);
  }

  _onError(frame) {
    if (frame.retry_after_ms) this.retryAfterMs = frame.retry_after_ms;
    if (frame.code === "rate_limited") {
      setTimeout(() => this.unacked.forEach((f) => this._send(f)), frame.retry_after_ms || 1000);
      return;
    }
    if (frame.id && frame.code === "unavailable") {
      const pending = this.unacked.find((f) => f.id === frame.id);
      if (pending) setTimeout(() => this._send(pending), frame.retry_after_ms || 1000);
      return;
    }
    if (frame.id) {
      // Refused for good (a client bug): resending it unchanged would fail again.
      this.unacked = this.unacked.filter((f) => f.id !== frame.id);
      this._save();
    }
    this.options.onError?.(frame);
  }

  _onNotice(event) {
    if (!event || this.seenNotices.has(event.id)) return;
    this.seenNotices.add(event.id);
    const o = this.options;
    switch (event.type) {
      case "proctor.message":
        return o.onMessage?.(event.text, event);
      case "proctor.announcement":
        return o.onAnnouncement?.(event.text, event);
      case "proctor.paused":
        if (this.paused) return undefined;
        this.paused = true;
        this.pausedAtLocal = Date.now();
        return o.onPause?.(event.reason || "", event);
      case "proctor.resumed":
        if (!this.paused) return undefined;
        if (this.timeEnd !== null && this.pausedAtLocal) this.timeEnd += Date.now() - this.pausedAtLocal;
        this.paused = false;
        this.pausedAtLocal = null;
        return o.onResume?.(event);
      case "proctor.time_extended":
        this.extendedS += event.seconds;
        if (this.timeEnd !== null) this.timeEnd += event.seconds * 1000;
        return o.onTimeExtended?.(event.seconds, this.timeEnd, event);
      default:
        return undefined;
    }
  }
}
