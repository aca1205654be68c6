"""The self-contained HTML report: one page, inline CSS, no scripts, per-student timelines."""

from __future__ import annotations

from collections.abc import Iterator
from html import escape
from zoneinfo import ZoneInfo

from audit.timeline import AttemptTimeline, Entry, ExamTimeline
from audit.times import format_duration, format_time

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0 1em} td,th{border:1px solid #ddd;padding:2px 6px;
text-align:left;vertical-align:top} th{background:#f4f4f4}
.active{background:#e3f6e3} .away{background:#fff6d6} .offline{background:#fbe0e0}
.proctor{font-weight:600} .meta{color:#666} .summary td:first-child{color:#666}
"""


def render(
    timeline: ExamTimeline, *, tz: ZoneInfo, header: dict[str, object], anchor_note: str = ""
) -> Iterator[str]:
    """The report in pieces (write them as they come)."""
    title = f"Exam {timeline.exam}: audit report"
    yield (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
    )
    yield "<table class='summary'>"
    for name, value in header.items():
        yield f"<tr><td>{escape(name)}</td><td>{escape(str(value))}</td></tr>"
    yield f"<tr><td>time zone</td><td>{escape(str(tz.key))}</td></tr></table>"
    if anchor_note:
        yield f"<p class='meta'>{escape(anchor_note)}</p>"
    if timeline.exam_wide:
        yield "<h2>Exam-wide</h2>"
        yield from _entries(timeline.exam_wide, tz)
    for attempt in timeline.students():
        yield from _attempt(attempt, tz)
    yield "</body></html>\n"


def _attempt(timeline: AttemptTimeline, tz: ZoneInfo) -> Iterator[str]:
    view = timeline.view
    name = f" ({view.name})" if view is not None and view.name else ""
    number = view.attempt_no if view is not None else "?"
    yield (
        f"<h2 id='{escape(timeline.attempt, quote=True)}'>Student {escape(timeline.student)}"
        f"{escape(name)}, attempt {number} "
        f"<span class='meta'>{escape(timeline.attempt)}</span></h2>"
    )
    if view is not None:
        score = "" if view.score is None else f", score {view.score:g}"
        yield (
            f"<p>{'submitted' if view.submitted else 'not submitted'}{escape(score)}; "
            f"answered {view.answered}/{view.total}; away {view.away_count} times "
            f"({format_duration(view.away_ms_total)} in all); offline {view.offline_count} "
            f"times; extended {view.extended_s} s</p>"
        )
    yield "<table><tr><th>status</th><th>from</th><th>to</th><th>duration</th><th>reason</th></tr>"
    for episode in timeline.episodes:
        yield (
            f"<tr class='{episode.status}'><td>{episode.status}</td>"
            f"<td>{escape(format_time(episode.start, tz))}</td>"
            f"<td>{escape(format_time(episode.end, tz))}</td>"
            f"<td>{escape(format_duration(episode.duration_ms))}</td>"
            f"<td>{escape(episode.reason or '')}</td></tr>"
        )
    yield "</table>"
    yield from _entries(timeline.entries, tz)


def _entries(entries: list[Entry], tz: ZoneInfo) -> Iterator[str]:
    yield (
        "<table><tr><th>server time</th><th>client time</th><th>who</th><th>what</th>"
        "<th>offset</th></tr>"
    )
    for entry in entries:
        css = " class='proctor'" if entry.actor.startswith("proctor") else ""
        yield (
            f"<tr{css}><td>{escape(format_time(entry.ts, tz))}</td>"
            f"<td>{escape(format_time(entry.client_ts, tz))}</td>"
            f"<td>{escape(entry.actor)}</td><td>{escape(entry.text)}</td>"
            f"<td>{entry.offset}</td></tr>"
        )
    yield "</table>"
