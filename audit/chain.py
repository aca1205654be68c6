"""The export's hash chain: build it line by line, and check it, naming the first bad line.

Every JSONL line is a JSON object; ``hash`` = sha256(``prev_hash`` + canonical JSON of the
line without ``hash``), canonical = keys sorted, no spaces (orjson ``OPT_SORT_KEYS``). The
header is the first link and starts from ``ANCHOR``; each event links to the line before;
the trailer (count and final hash) closes the chain. Re-serialising a parsed line gives the
same bytes, so whitespace changes do not break the chain but any change of a value does.

What the chain proves: the file is the sequence the exporter wrote, or someone rewrote it
from the changed line onwards. Only a copy of the final hash kept elsewhere (the case file,
a signed e-mail) rules out the second; ``verify --expect-final`` checks against it.

Two hashes close a file, which is a trap for whoever copies one out of it: the file's final
hash is the trailer line's own ``hash`` (what export prints), while the trailer's
``final_hash`` field is the hash of the last event line (the chain before the trailer). The
field name is part of format 1, so ``--expect-final`` accepts either; the last event's hash
vouches for every event line, the trailer's hash also for the trailer's counters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

FORMAT = "proctor-audit-export/1"
ANCHOR = hashlib.sha256(FORMAT.encode()).hexdigest()

Problem = Literal["changed", "removed", "inserted", "truncated", "malformed", "final_mismatch"]


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def link_hash(line: dict[str, Any]) -> str:
    """The hash a line must carry: over its ``prev_hash`` and every field but ``hash``."""
    body = {k: v for k, v in line.items() if k != "hash"}
    return hashlib.sha256(str(line.get("prev_hash", "")).encode() + canonical(body)).hexdigest()


class ChainWriter:
    """Turns line objects into chained, canonical JSONL lines (bytes ending in a newline)."""

    def __init__(self) -> None:
        self.last_hash = ANCHOR
        self.events = 0

    def header(self, fields: dict[str, Any]) -> bytes:
        return self._link({"kind": "header", "format": FORMAT, "anchor": ANCHOR, **fields})

    def event(self, partition: int, offset: int, event: Any) -> bytes:
        self.events += 1
        return self._link(
            {"kind": "event", "seq": {"partition": partition, "offset": offset}, "event": event}
        )

    def trailer(self, fields: dict[str, Any]) -> bytes:
        return self._link(
            {"kind": "trailer", "count": self.events, "final_hash": self.last_hash, **fields}
        )

    def _link(self, line: dict[str, Any]) -> bytes:
        line["prev_hash"] = self.last_hash
        line["hash"] = self.last_hash = link_hash(line)
        return canonical(line) + b"\n"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: int
    events: int
    final_hash: str | None = None
    last_event_hash: str | None = None  # the trailer's final_hash field
    problem: Problem | None = None
    line: int | None = None
    event_id: str | None = None
    message: str = ""


@dataclass(frozen=True)
class _Line:
    number: int
    obj: dict[str, Any] | None

    @property
    def event_id(self) -> str | None:
        event = (self.obj or {}).get("event")
        return str(event["id"]) if isinstance(event, dict) and "id" in event else None

    def get(self, name: str) -> Any:
        return None if self.obj is None else self.obj.get(name)


def _parse(lines: Iterable[bytes]) -> Iterator[_Line]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        yield _Line(number, obj if isinstance(obj, dict) else None)


def verify(lines: Iterable[bytes], *, expect_final: str | None = None) -> Verdict:
    """Check the chain; on the first break, say which line and event and what happened."""
    stream = _parse(lines)
    current = next(stream, None)
    expected = ANCHOR  # the hash the next line must link to
    before: str | None = None  # the hash one link further back (to spot an inserted line)
    events = seen = 0
    trailer: _Line | None = None
    previous: _Line | None = None
    while current is not None:
        following = next(stream, None)
        seen += 1
        bad = _check(current, previous, following, expected, before, seen, trailer)
        if bad is not None:
            return Verdict(False, seen, events, **bad)
        kind = current.get("kind")
        if kind == "event":
            events += 1
        elif kind == "trailer":
            trailer = current
            if current.get("count") != events or current.get("final_hash") != expected:
                return _fail(
                    current,
                    seen,
                    events,
                    "changed",
                    "trailer's count or final hash disagrees with the chain (rewritten trailer)",
                )
        before, expected = expected, str(current.get("hash"))
        previous, current = current, following
    if trailer is None:
        return Verdict(
            False,
            seen,
            events,
            problem="truncated",
            line=seen + 1,
            message=f"no trailer: lines were removed after line {seen}",
        )
    last_event_hash = str(trailer.get("final_hash"))
    if expect_final is not None and expect_final.strip().lower() not in (
        expected,
        last_event_hash,
    ):
        return Verdict(
            False,
            seen,
            events,
            final_hash=expected,
            problem="final_mismatch",
            line=trailer.number,
            message="the chain is consistent but neither its final hash (the trailer's hash) "
            "nor the last event's (the trailer's final_hash field) is the one recorded: "
            "the file was rewritten from some line onwards",
        )
    return Verdict(
        True,
        seen,
        events,
        final_hash=expected,
        last_event_hash=last_event_hash,
        message="intact",
    )


def _check(
    line: _Line,
    previous: _Line | None,
    following: _Line | None,
    expected: str,
    before: str | None,
    index: int,
    trailer: _Line | None,
) -> dict[str, Any] | None:
    where = {"line": line.number, "event_id": line.event_id}
    if line.obj is None:
        return {
            "problem": "malformed",
            "message": f"line {line.number} is not a JSON object",
            **where,
        }
    if trailer is not None:
        return {
            "problem": "inserted",
            "message": f"line {line.number} follows the trailer",
            **where,
        }
    content_ok = line.get("hash") == link_hash(line.obj)
    link_ok = line.get("prev_hash") == expected
    if content_ok and link_ok:
        kind = line.get("kind")
        if (index == 1) != (kind == "header"):
            return {
                "problem": "changed",
                "message": f"line {line.number}: header out of place",
                **where,
            }
        return None
    next_prev = following.get("prev_hash") if following is not None else None
    if next_prev == expected:
        # The chain goes on from the line before, past this one: it does not belong.
        return {
            "problem": "inserted",
            **where,
            "message": f"line {line.number} was inserted (the next line links past it)",
        }
    if not content_ok:
        return {
            "problem": "changed",
            **where,
            "message": f"line {line.number} was changed (its hash does not match its content)",
        }
    if previous is not None and line.get("prev_hash") == before:
        # The previous line carried a valid hash but the chain skips it: it was inserted.
        return {
            "problem": "inserted",
            "line": previous.number,
            "event_id": previous.event_id,
            "message": f"line {previous.number} was inserted (line {line.number} links past it)",
        }
    return {
        "problem": "removed",
        **where,
        "message": f"an event was removed just before line {line.number} "
        "(or the line before it was rewritten together with its hash)",
    }


def _fail(line: _Line, seen: int, events: int, problem: Problem, message: str) -> Verdict:
    return Verdict(
        False,
        seen,
        events,
        problem=problem,
        line=line.number,
        event_id=line.event_id,
        message=message,
    )
