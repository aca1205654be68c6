// The proctor dashboard view (Preact + htm, vendored). Frames change the model; the view is
// rendered at most once per animation frame, and a tile re-renders only when its row changed
// (or the one-second clock ticked), so 1,000 students updating every 5 s stay smooth.
import { html, render, Component } from "/static/vendor/htm-preact-standalone.module.js";
import { ExamModel, incidentRank, stateOf } from "/static/dashboard/model.js";
import { ProctorConnection } from "/static/dashboard/connection.js";

const ROOM_MAX = 16;
const FILTERS = ["all", "offline", "away", "active", "paused", "submitted"];
const params = new URLSearchParams(location.search);
const wsUrl = params.get("ws") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

const ui = {
  filter: "all", search: "", selected: null, room: new Set(), roomOnly: false, tick: 0,
  message: "", announce: "", extendMin: 5, reason: "",
};
const model = new ExamModel();
const perf = { renders: 0, renderMs: [] };
let conn = null;
let order = [];

// -- batching: any number of frames between two paints cost one render ------------------
let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    const started = performance.now();
    render(html`<${App} />`, document.getElementById("app"));
    perf.renders += 1;
    perf.renderMs.push(performance.now() - started);
    if (perf.renderMs.length > 5000) perf.renderMs.splice(0, 2500);
  });
}
model.listeners.add(schedule);
// Clocks tick by a direct text update of the few cells that count, not by re-rendering every
// tile: at 1,000 tiles a once-a-second full diff costs a long task.
setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-until]")) el.textContent = mmss(Number(el.dataset.until) - now);
  for (const el of document.querySelectorAll("[data-since]")) el.textContent = mmss(now - Number(el.dataset.since));
  if (ui.selected || conn?.state === "reconnecting") { ui.tick += 1; schedule(); }
}, 1000);

function roomKey() { return `proctor:room:${model.exam}`; }
function loadRoom() {
  try { ui.room = new Set(JSON.parse(localStorage.getItem(roomKey()) || "[]")); } catch { ui.room = new Set(); }
}
function saveRoom() { localStorage.setItem(roomKey(), JSON.stringify([...ui.room])); }

function mmss(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

function remaining(row, now) {
  if (row.time_end == null) return null;
  return row.time_end - (row.paused && row.paused_at ? row.paused_at : now);
}

function visibleRows() {
  if (model.orderDirty) {
    order = [...model.rows.values()].sort((a, b) => incidentRank(a) - incidentRank(b)
      || (a.offline_since ?? a.away_since ?? 0) - (b.offline_since ?? b.away_since ?? 0)
      || (a.name || a.student).localeCompare(b.name || b.student)).map((r) => r.attempt);
    model.orderDirty = false;
  }
  const needle = ui.search.trim().toLowerCase();
  const out = [];
  for (const attempt of order) {
    const row = model.rows.get(attempt);
    if (!row) continue;
    if (ui.roomOnly && !ui.room.has(attempt)) continue;
    if (ui.filter === "paused" ? !row.paused : ui.filter !== "all" && stateOf(row) !== ui.filter) continue;
    if (needle && !`${row.name} ${row.student}`.toLowerCase().includes(needle)) continue;
    out.push(row);
  }
  return out;
}

class Tile extends Component {
  shouldComponentUpdate(next) {
    const p = this.props;
    return next.row !== p.row || next.selected !== p.selected || next.inRoom !== p.inRoom;
  }

  render({ row, selected, inRoom }) {
    const now = Date.now();
    const state = stateOf(row);
    const left = remaining(row, now);
    let note = "";
    if (row.submitted) note = row.score != null ? `score ${row.score}` : "submitted";
    else if (row.status === "offline") {
      note = html`gone <span data-since=${row.offline_since ?? now}>${mmss(now - (row.offline_since ?? now))}</span> · ${row.offline_reason ?? ""}`;
    } else if (row.status === "away" && row.away_since) {
      note = html`away <span data-since=${row.away_since}>${mmss(now - row.away_since)}</span>`;
    }
    const counting = left !== null && !(row.paused && row.paused_at) && !row.submitted;
    return html`<div class="tile ${state} ${row.paused ? "paused" : ""} ${selected ? "selected" : ""}"
        data-attempt=${row.attempt} data-state=${state} data-paused=${row.paused ? "1" : "0"}
        onClick=${() => { ui.selected = row.attempt; schedule(); }}>
      <div class="top">
        <span class="name">${row.name || row.student}</span>
        <button class="pin ${inRoom ? "on" : ""}" title="add to / remove from my room"
          onClick=${(e) => { e.stopPropagation(); toggleRoom(row.attempt); }}>${inRoom ? "★" : "☆"}</button>
      </div>
      <div class="mid">
        <span class="state">${row.paused && !row.submitted ? "paused" : state}</span>
        <span class="q">Q${row.question_current ?? "–"} · ${row.answered}/${row.total}</span>
      </div>
      <div class="bot">
        <span class="left" data-until=${counting ? row.time_end : undefined}>${left === null || row.submitted ? "" : mmss(left)}</span>
        <span class="away" title="times away">↗${row.away_count}</span>
      </div>
      ${note && html`<div class="note">${note}</div>`}
    </div>`;
  }
}

function toggleRoom(attempt) {
  if (ui.room.has(attempt)) ui.room.delete(attempt);
  else if (ui.room.size < ROOM_MAX) ui.room.add(attempt);
  saveRoom();
  schedule();
}

function Counts() {
  const c = model.counts();
  return html`<div class="counts" data-testid="counts">
    ${["active", "away", "offline", "submitted"].map((k) => html`
      <button class="count ${k} ${ui.filter === k ? "on" : ""}" data-count=${k}
        onClick=${() => { ui.filter = ui.filter === k ? "all" : k; schedule(); }}>
        <b>${c[k]}</b> ${k}</button>`)}
    ${model.roster?.students && html`<button class="count not-started ${ui.filter === "not_started" ? "on" : ""}"
      data-count="not_started" onClick=${() => { ui.filter = ui.filter === "not_started" ? "all" : "not_started"; schedule(); }}>
      <b>${model.notStarted().length}</b> not started</button>`}
    <span class="total">${c.total} students</span>
  </div>`;
}

function Connection() {
  const label = conn.state === "reconnecting"
    ? `reconnecting in ${Math.max(0, Math.ceil((conn.nextRetryAt - Date.now()) / 1000))} s`
    : conn.state === "open" && !conn.subscribed ? "loading snapshot" : conn.state;
  return html`<span class="conn ${conn.state}" data-testid="connection" data-state=${conn.state}
      data-subscribed=${conn.subscribed ? "1" : "0"} title=${conn.lastError || ""}>● ${label}</span>`;
}

function StaleView() {
  const stale = conn.viewStale;
  if (!stale) return null;
  const since = stale.since ? new Date(stale.since).toLocaleTimeString() : "";
  return html`<div class="stale" role="status" data-testid="view-stale">
    Live updates paused since ${since}: the server is not receiving this exam's events
    (${stale.stale_partitions.length} log partition(s)). Rows may be out of date; they catch up
    by themselves when it returns.</div>`;
}

function Alerts() {
  if (!model.alerts.length) return null;
  const shown = model.alerts.slice(-6).reverse();
  return html`<div class="alerts" data-testid="alerts">
    ${shown.map((a) => html`<div class="alert ${a.kind}" data-alert=${a.id}>
      <b>${a.kind.replace(/_/g, " ")}</b>
      <a href="#" onClick=${(e) => { e.preventDefault(); ui.selected = a.attempt; schedule(); }}>${a.detail}</a>
      <button class="dismiss" title="dismiss" onClick=${() => model.dismissAlert(a.id)}>×</button>
    </div>`)}
    ${model.alerts.length > shown.length && html`<span class="more">+${model.alerts.length - shown.length} more</span>`}
  </div>`;
}

function CommandLog({ attempt }) {
  const list = [...conn.commands.values()].filter((c) => attempt === undefined || c.attempt === attempt).slice(-6);
  return html`<ul class="commands" data-testid="commands">
    ${list.map((c) => html`<li class=${c.state} data-command=${c.frame.type} data-state=${c.state}>
      ${c.label} — <b>${c.state === "pending" ? "sending…" : c.state === "acked" ? "recorded ✓" : "failed"}</b>
      ${c.state === "error" && html` <span class="err">${c.message}</span>`}</li>`)}
  </ul>`;
}

function Panel() {
  const row = model.rows.get(ui.selected);
  if (!row) return null;
  const attempt = row.attempt;
  const left = remaining(row, Date.now());
  const send = (type, fields, label) => { conn.command(type, { attempt, ...fields }, label); schedule(); };
  return html`<aside class="panel" data-testid="panel">
    <header><h2>${row.name || row.student}</h2>
      <button class="close" onClick=${() => { ui.selected = null; schedule(); }}>×</button></header>
    <dl>
      <dt>state</dt><dd data-testid="panel-state">${stateOf(row)}${row.paused ? " (paused)" : ""}</dd>
      <dt>question</dt><dd>${row.question_current ?? "–"} · ${row.answered}/${row.total} answered</dd>
      <dt>time left</dt><dd data-testid="panel-left">${left === null ? "no deadline" : mmss(left)}
        ${row.extended_s ? ` (+${row.extended_s} s)` : ""}</dd>
      <dt>away</dt><dd>${row.away_count}× · ${Math.round(row.away_ms_total / 1000)} s total</dd>
      <dt>offline</dt><dd>${row.offline_count}×${row.offline_reason ? ` · last: ${row.offline_reason}` : ""}</dd>
      ${row.submitted && html`<dt>score</dt><dd>${row.score ?? "–"}</dd>`}
    </dl>
    <div class="actions">
      <form onSubmit=${(e) => { e.preventDefault(); if (ui.message.trim()) { send("message", { text: ui.message.trim() }, `message “${ui.message.trim()}”`); ui.message = ""; } }}>
        <input name="message" placeholder="Message to this student" value=${ui.message}
          onInput=${(e) => { ui.message = e.target.value; }} />
        <button type="submit">Send</button>
      </form>
      <div class="row">
        ${row.paused
          ? html`<button data-action="resume" onClick=${() => send("resume", {}, "resume")}>Resume</button>`
          : html`<button data-action="pause" onClick=${() => send("pause", { reason: ui.reason }, "pause")}>Pause</button>`}
        <input class="num" type="number" min="1" max="1440" value=${ui.extendMin}
          onInput=${(e) => { ui.extendMin = Number(e.target.value) || 1; }} />
        <button data-action="extend" onClick=${() => send("extend", { seconds: ui.extendMin * 60 }, `extend +${ui.extendMin} min`)}>Extend (min)</button>
      </div>
    </div>
    <${CommandLog} attempt=${attempt} />
    <h3>Recent timeline</h3>
    <ol class="timeline" data-testid="timeline">
      ${model.timelineOf(attempt).slice().reverse().map((e) => html`<li class=${e.kind.replace(/\./g, "-")}>
        <time>${new Date(e.ts).toLocaleTimeString()}</time> ${e.text}</li>`)}
    </ol>
  </aside>`;
}

function Toolbar() {
  return html`<div class="toolbar">
    <div class="filters">${FILTERS.map((f) => html`<button class=${ui.filter === f ? "on" : ""} data-filter=${f}
      onClick=${() => { ui.filter = f; schedule(); }}>${f}</button>`)}</div>
    <input type="search" placeholder="Search by name" value=${ui.search} data-testid="search"
      onInput=${(e) => { ui.search = e.target.value; schedule(); }} />
    <label class="room"><input type="checkbox" checked=${ui.roomOnly} data-testid="room-only"
      onChange=${(e) => { ui.roomOnly = e.target.checked; schedule(); }} /> my room only (${ui.room.size}/${ROOM_MAX} ★)</label>
    ${ui.room.size > 0 && html`<button onClick=${() => { ui.room.clear(); saveRoom(); schedule(); }}>clear room</button>`}
    <form class="announce" onSubmit=${(e) => { e.preventDefault(); const text = ui.announce.trim(); if (text) { conn.command("announce", { text }, `announce “${text}”`); ui.announce = ""; schedule(); } }}>
      <input name="announce" placeholder="Announce to everyone" value=${ui.announce}
        onInput=${(e) => { ui.announce = e.target.value; }} />
      <button type="submit">Announce</button>
    </form>
  </div>`;
}

// Enrolled in the LMS course but not connected once: listed by name, not as tiles (they have
// no state to show), under the grid or alone with the "not started" filter.
function NotStarted() {
  if (model.roster?.error) {
    return html`<p class="roster-error" data-testid="roster-error">Course roster unavailable: ${model.roster.error}</p>`;
  }
  const waiting = model.notStarted();
  if (!model.roster || (!waiting.length && ui.filter !== "not_started")) return null;
  const needle = ui.search.trim().toLowerCase();
  const shown = waiting.filter((s) => !needle || `${s.name} ${s.student}`.toLowerCase().includes(needle));
  return html`<section class="waiting" data-testid="not-started">
    <h2>Not started (${waiting.length})</h2>
    <ul>${shown.map((s) => html`<li data-attempt=${s.attempt} data-state="not_started">${s.name || s.student}</li>`)}</ul>
  </section>`;
}

function App() {
  const rows = ui.filter === "not_started" ? [] : visibleRows();
  return html`<div class="layout ${ui.selected ? "with-panel" : ""}">
    <header class="bar">
      <h1>Proctor</h1>
      <select data-testid="exam" value=${conn.watching || ""} onChange=${(e) => { conn.watch(e.target.value); loadRoom(); }}>
        ${conn.exams.map((x) => html`<option value=${x}>${examTitles.get(x) || x}</option>`)}
      </select>
      <${Counts} />
      <${Connection} />
    </header>
    <${Toolbar} />
    <${StaleView} />
    <${Alerts} />
    <${CommandLog} attempt=${undefined} />
    <main class="grid" data-testid="grid">
      ${rows.map((row) => html`<${Tile} key=${row.attempt} row=${row}
        selected=${ui.selected === row.attempt} inRoom=${ui.room.has(row.attempt)} />`)}
    </main>
    <${NotStarted} />
    <${Panel} />
  </div>`;
}

function SignIn() {
  return html`<form class="signin" onSubmit=${(e) => {
    e.preventDefault();
    const token = new FormData(e.target).get("token").trim();
    if (token) { sessionStorage.setItem("proctor:token", token); start(token); }
  }}>
    <h1>Proctor sign-in</h1>
    <textarea name="token" rows="5" placeholder="Paste your proctor token"></textarea>
    <button type="submit">Sign in</button>
  </form>`;
}

// The roster comes from the LTI tool that launched this dashboard (docs/lms.md), for the exam
// being watched; refreshed every minute, as students enrol late too.
const rosterUrl = () => sessionStorage.getItem("proctor:roster");
let rosterFor = null;
const examTitles = new Map(); // exam id -> its title in the LMS, from the roster
async function loadRoster(token) {
  const exam = conn?.watching;
  if (!rosterUrl() || !exam) return;
  rosterFor = exam;
  try {
    const response = await fetch(`${rosterUrl()}/lti/roster?exam=${encodeURIComponent(exam)}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    const body = await response.json();
    if (response.ok && body.title) examTitles.set(exam, body.title);
    if (conn.watching !== exam) return;
    model.setRoster(response.ok ? body : { error: body.message || body.error || `HTTP ${response.status}` });
  } catch (err) {
    if (conn.watching === exam) model.setRoster({ error: String(err) });
  }
}

function start(token) {
  conn = new ProctorConnection({ url: wsUrl, token, model, onChange: () => {
    if (rosterUrl() && conn.watching && conn.watching !== rosterFor) loadRoster(token);
    schedule();
  } });
  if (params.get("exam")) conn.watching = params.get("exam");
  model.exam = conn.watching;
  setInterval(() => loadRoster(token), 60_000);
  loadRoom();
  window.dashboard = { model, conn, perf, ui, handle: (frame) => conn.handle(frame) };
  if (params.get("offline") !== "1") conn.start(); // offline=1: frames come only through handle()
  schedule();
}

// A launch from the LMS hands the token over in the fragment (#token=...&roster=...), which
// the browser never sends to a server; a link may also carry it in the query.
const handed = new URLSearchParams(location.hash.slice(1));
const given = handed.get("token") || params.get("token");
const token = given || sessionStorage.getItem("proctor:token");
if (given) {
  sessionStorage.setItem("proctor:token", given);
  if (handed.get("roster")) sessionStorage.setItem("proctor:roster", handed.get("roster"));
  else sessionStorage.removeItem("proctor:roster");
  // Keep the token out of the address bar (and out of screenshots and history).
  const clean = new URLSearchParams(params);
  clean.delete("token");
  history.replaceState(null, "", `${location.pathname}${clean.size ? `?${clean}` : ""}`);
}
if (token) start(token);
else render(html`<${SignIn} />`, document.getElementById("app"));
