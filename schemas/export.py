"""Export the wire and record models as JSON Schema files (``schemas/json/``).

    python -m schemas.export            # (re)write the files
    python -m schemas.export --check    # exit 1 and name the files that drifted from the models

The files are for clients and tools in other languages; the pydantic models stay the source
of truth. Output is deterministic (sorted keys, 2-space indent, trailing newline) so a drift
check can compare text and a diff shows only real changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas.deliveries import DELIVERY_BATCH
from schemas.events import EXAM_EVENT
from schemas.frames import CLIENT_FRAME, SERVER_FRAME
from schemas.legacy import LegacyFrame
from schemas.presence import PRESENCE_RECORD, GatewayHeartbeat, LogProbe
from schemas.views import AttemptState, StudentView

SCHEMA_DIR = Path(__file__).parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Top-level schema objects, by file name. Version suffixes follow each record's own version,
# so a breaking change gets a new file beside the old one rather than rewriting it.
_SOURCES: dict[str, tuple[TypeAdapter[Any] | type[BaseModel], str]] = {
    "exam-event.v1.json": (EXAM_EVENT, "A record of the exam event log (topic exam.events)."),
    "presence-record.v1.json": (
        PRESENCE_RECORD,
        "A record of the compacted presence topic (proctor.presence).",
    ),
    "gateway-heartbeat.v1.json": (
        GatewayHeartbeat,
        "A gateway's once-a-second heartbeat record (topic proctor.heartbeats).",
    ),
    "log-probe.v1.json": (
        LogProbe,
        "The notifier's log probe, read back in order with the heartbeats (proctor.heartbeats).",
    ),
    "delivery-batch.v1.json": (
        DELIVERY_BATCH,
        "A router output record for one gateway slot (topic proctor.deliveries).",
    ),
    "client-frame.v1.json": (CLIENT_FRAME, "A WebSocket frame a student or proctor client sends."),
    "server-frame.v1.json": (SERVER_FRAME, "A WebSocket frame the gateway sends to a client."),
    "legacy-frame.json": (
        LegacyFrame,
        "The seed's legacy student frame (message_to_master / lmsQuizMonitoringStudent).",
    ),
    "attempt-state.v1.json": (
        AttemptState,
        "Per-attempt state as the reducer folds it (Redis snapshot, DynamoDB item).",
    ),
    "student-view.v1.json": (StudentView, "One row of the proctor dashboard."),
}


def _schema_of(source: TypeAdapter[Any] | type[BaseModel]) -> dict[str, Any]:
    if isinstance(source, TypeAdapter):
        return source.json_schema()
    return source.model_json_schema()


def _require_discriminators(schema: dict[str, Any]) -> None:
    """Mark each tagged-union member's tag as required.

    The models give tags like ``type`` a default so code can build them without repeating it,
    which pydantic exports as optional; but a union only accepts input that carries the tag,
    and a validator in another language must reject what pydantic rejects.
    """
    defs = schema.get("$defs", {})

    def visit(node: object) -> None:
        if isinstance(node, dict):
            discriminator = node.get("discriminator")
            if isinstance(discriminator, dict):
                tag = discriminator["propertyName"]
                for ref in discriminator.get("mapping", {}).values():
                    member = defs[ref.removeprefix("#/$defs/")]
                    required = member.setdefault("required", [])
                    if tag not in required:
                        required.insert(0, tag)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)


def _render(name: str, source: TypeAdapter[Any] | type[BaseModel], description: str) -> str:
    schema = _schema_of(source)
    _require_discriminators(schema)
    schema.setdefault("title", name.removesuffix(".json"))
    schema.setdefault("description", description)
    schema["$schema"] = DIALECT
    schema["$id"] = name
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """File name -> the exact text the file must hold."""
    return {name: _render(name, source, doc) for name, (source, doc) in _SOURCES.items()}


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Files in ``directory`` that are missing, differ from the models, or no longer exported."""
    expected = render_all()
    problems = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    ]
    if directory.is_dir():
        problems += sorted(p.name for p in directory.glob("*.json") if p.name not in expected)
    return sorted(problems)


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Bring ``directory`` in line with the models; returns the files written or removed."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_all()
    changed = drifted(directory)
    for name in changed:
        path = directory / name
        if name in expected:
            path.write_text(expected[name], "utf-8")
        else:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export", description="Export the models as JSON Schema files."
    )
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="where the files live")
    args = parser.parse_args(argv)
    if args.check:
        problems = drifted(args.dir)
        for name in problems:
            out(f"drifted: {args.dir / name}")
        if problems:
            out("run `python -m schemas.export` and commit the result")
            return 1
        return 0
    for name in write(args.dir):
        out(f"wrote: {args.dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
