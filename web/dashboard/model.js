// The dashboard's state, kept outside the view: frames change it, the view reads it once per frame.
// Rules from docs/protocol.md §9: a snapshot replaces every row; an update applies only if its
// seq is newer; timeline entries are deduplicated by event id.

const TIMELINE_PER_STUDENT = 40;
const STATE_RANK = { offline: 0, away: 1, paused: 2, active: 3, submitted: 4 };

export function stateOf(row) {
  if (row.submitted) return "submitted";
  return row.status;
}

export function incidentRank(row) {
  if (row.submitted) return STATE_RANK.submitted;
  if (row.status === "active" && row.paused) return STATE_RANK.paused;
  return STATE_RANK[row.status] ?? 9;
}

export class ExamModel {
  constructor() {
    this.exam = null;
    this.rows = new Map();
    this.version = 0; // bumps on any change the view must show
    this.orderDirty = true;
    this.timeline = new Map(); // attempt -> entries, newest last
    this.seenEvents = new Set();
    this.alerts = []; // {id, attempt, kind, detail, ts}
    this.rowsApplied = 0;
    this.listeners = new Set();
    // The LMS's enrolment (LTI NRPS), when the dashboard was launched from one:
    // {students: [{attempt, student, name}], error} or null.
    this.roster = null;
  }

  setRoster(roster) {
    this.roster = roster;
    this.changed();
  }

  // Enrolled students with no row yet: they have not opened the exam.
  notStarted() {
    if (!this.roster?.students) return [];
    return this.roster.students.filter((s) => !this.rows.has(s.attempt))
      .sort((a, b) => (a.name || a.student).localeCompare(b.name || b.student));
  }

  changed() {
    this.version += 1;
    for (const listener of this.listeners) listener();
  }

  reset(exam) {
    this.exam = exam;
    this.rows = new Map();
    this.roster = null;
    this.orderDirty = true;
    this.changed();
  }

  loadSnapshot(rows) {
    // Replace, never merge: the snapshot is the truth after a (re)subscribe.
    const next = new Map();
    for (const row of rows) {
      const old = this.rows.get(row.attempt);
      if (old && old.status !== row.status) this._statusEntry(old, row);
      next.set(row.attempt, row);
    }
    this.rows = next;
    this.rowsApplied += rows.length;
    this.orderDirty = true;
    this.changed();
  }

  applyUpdates(rows) {
    let any = false;
    for (const row of rows) {
      const old = this.rows.get(row.attempt);
      if (old && row.seq <= old.seq) continue;
      if (!old || incidentRank(old) !== incidentRank(row) || old.name !== row.name) this.orderDirty = true;
      if (old && (old.status !== row.status || old.submitted !== row.submitted)) this._statusEntry(old, row);
      this.rows.set(row.attempt, row);
      this.rowsApplied += 1;
      any = true;
    }
    if (any) this.changed();
  }

  applyEvents(events) {
    let any = false;
    for (const event of events) {
      if (this.seenEvents.has(event.id)) continue;
      this.seenEvents.add(event.id);
      any = true;
      if (event.type === "alert.raised") {
        this.alerts.push({ id: event.id, attempt: event.attempt, kind: event.kind, detail: event.detail, ts: event.ts });
      }
      const key = event.attempt || "*";
      this._push(key, { id: event.id, ts: event.ts, kind: event.type, text: describe(event) });
    }
    if (any) this.changed();
  }

  dismissAlert(id) {
    this.alerts = this.alerts.filter((a) => a.id !== id);
    this.changed();
  }

  timelineOf(attempt) {
    const own = this.timeline.get(attempt) || [];
    const exam = this.timeline.get("*") || [];
    return [...own, ...exam].sort((a, b) => a.ts - b.ts).slice(-TIMELINE_PER_STUDENT);
  }

  counts() {
    const counts = { active: 0, away: 0, offline: 0, submitted: 0, total: this.rows.size };
    for (const row of this.rows.values()) counts[stateOf(row)] += 1;
    return counts;
  }

  _statusEntry(old, row) {
    const from = stateOf(old);
    const to = stateOf(row);
    if (from === to) return;
    const why = to === "offline" && row.offline_reason ? ` (${row.offline_reason})` : "";
    this._push(row.attempt, {
      id: `status:${row.attempt}:${row.seq}`, ts: row.updated_at || Date.now(), kind: "status", text: `${from} → ${to}${why}`,
    });
  }

  _push(key, entry) {
    const list = this.timeline.get(key) || [];
    list.push(entry);
    if (list.length > TIMELINE_PER_STUDENT) list.shift();
    this.timeline.set(key, list);
  }
}

export function describe(event) {
  switch (event.type) {
    case "student.answer": return `answered question ${event.question}: ${event.answer}`;
    case "student.submitted": return `submitted${event.score != null ? `, score ${event.score}` : ""}`;
    case "student.offline": return `offline (${event.reason})`;
    case "student.back_online": return `back online after ${Math.round(event.offline_ms / 1000)} s`;
    case "proctor.message": return `message from ${event.source?.id}: ${event.text}`;
    case "proctor.announcement": return `announcement: ${event.text}`;
    case "proctor.paused": return `paused by ${event.source?.id}${event.reason ? `: ${event.reason}` : ""}`;
    case "proctor.resumed": return `resumed by ${event.source?.id}`;
    case "proctor.time_extended": return `time extended by ${event.seconds} s`;
    case "alert.raised": return `alert ${event.kind}: ${event.detail}`;
    default: return event.type;
  }
}
