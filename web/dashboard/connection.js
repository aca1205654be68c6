// The proctor's WebSocket: reconnect with backoff and full jitter, re-subscribe after every
// welcome (the new snapshot replaces the rows), resend unacknowledged commands (protocol §14).
import { backoffDelayMs } from "/client/student.js";

const STABLE_AFTER_MS = 30_000;

export class ProctorConnection {
  constructor({ url, token, model, onChange }) {
    this.url = url;
    this.token = token;
    this.model = model;
    this.onChange = onChange;
    this.state = "connecting";
    this.exams = [];
    this.proctor = null;
    this.watching = null; // the exam this page shows
    this.subscribed = false;
    this.commands = new Map(); // id -> {id, label, frame, state, message, at}
    this.failures = 0;
    this.retryAfterMs = 0;
    this.reconnects = 0;
    this.nextRetryAt = null;
    this.ws = null;
    this.closedForGood = false;
    this.viewStale = null; // {stale_partitions, since} while the server says the view is not live
  }

  start() {
    this._connect();
  }

  watch(exam) {
    if (this.watching && this.watching !== exam && this.subscribed) {
      this._send({ type: "unsubscribe", exam: this.watching });
    }
    this.watching = exam;
    this.subscribed = false;
    this.model.reset(exam);
    if (this.state === "open") this._send({ type: "subscribe", exam });
  }

  command(type, fields, label) {
    const id = `cmd-${crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(16).slice(2)}`;
    const frame = { type, id, exam: this.watching, ...fields };
    this.commands.set(id, { id, label, frame, attempt: fields.attempt, state: "pending", message: "", at: Date.now() });
    this._send(frame);
    this.onChange();
    return id;
  }

  _connect() {
    this.state = "connecting";
    this.nextRetryAt = null;
    this.onChange();
    const ws = new WebSocket(`${this.url}?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    ws.onmessage = (message) => this.handle(JSON.parse(message.data));
    ws.onclose = (close) => this._onClose(ws, close);
  }

  _onClose(ws, close) {
    if (ws !== this.ws) return;
    clearTimeout(this.stableTimer);
    this.subscribed = false;
    if (close.code === 4401) {
      this.closedForGood = true;
      this.state = "unauthorized";
      this.lastError = close.reason;
      this.onChange();
      return;
    }
    const delay = backoffDelayMs(this.failures, this.retryAfterMs);
    this.failures += 1;
    this.retryAfterMs = 0;
    this.state = "reconnecting";
    this.nextRetryAt = Date.now() + delay;
    this.onChange();
    setTimeout(() => this._connect(), delay);
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** Every server frame goes through here (tests and the benchmark inject frames too). */
  handle(frame) {
    switch (frame.type) {
      case "welcome":
        this.state = "open";
        this.viewStale = null;
        this.proctor = frame.proctor?.proctor;
        this.exams = frame.proctor?.exams || [];
        this.stableTimer = setTimeout(() => (this.failures = 0), STABLE_AFTER_MS);
        if (this.watching === null && this.exams.length) this.watching = this.exams[0];
        if (this.watching) this._send({ type: "subscribe", exam: this.watching });
        for (const pending of this.commands.values()) if (pending.state === "pending") this._send(pending.frame);
        if (this.connectedOnce) this.reconnects += 1;
        this.connectedOnce = true;
        break;
      case "snapshot":
        if (frame.exam !== this.watching) return;
        this.subscribed = true;
        this.model.exam = frame.exam;
        this.model.loadSnapshot(frame.students);
        break;
      case "updates":
        if (frame.exam === this.watching) this.model.applyUpdates(frame.students);
        return;
      case "events":
        if (frame.exam === this.watching) this.model.applyEvents(frame.events);
        return;
      case "view_status":
        // The gateway hears no router for some of the log: rows may be out of date.
        this.viewStale = frame.live ? null : frame;
        break;
      case "ack":
        this._settle(frame.id, "acked", "recorded");
        break;
      case "error":
        this._onError(frame);
        break;
      default:
        return;
    }
    this.onChange();
  }

  _onError(frame) {
    if (frame.retry_after_ms) this.retryAfterMs = frame.retry_after_ms;
    if (frame.code === "snapshot_timeout" && this.watching) {
      const exam = this.watching;
      setTimeout(() => this.state === "open" && this.watching === exam && this._send({ type: "subscribe", exam }),
        backoffDelayMs(1, frame.retry_after_ms || 0));
    }
    if (frame.id && this.commands.has(frame.id)) {
      if (frame.code === "unavailable") {
        const pending = this.commands.get(frame.id);
        setTimeout(() => this._send(pending.frame), frame.retry_after_ms || 1000);
      } else {
        this._settle(frame.id, "error", `${frame.code}: ${frame.message}`);
      }
    }
    this.lastError = `${frame.code}: ${frame.message}`;
  }

  _settle(id, state, message) {
    const command = this.commands.get(id);
    if (!command) return;
    command.state = state;
    command.message = message;
    command.settledAt = Date.now();
  }
}
