"""CSV rows for spreadsheets: one event a row, common fields as columns, the rest as JSON."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import orjson

from audit.times import iso_time

COLUMNS = (
    "partition",
    "offset",
    "id",
    "type",
    "exam",
    "attempt",
    "student",
    "server_time",
    "client_time",
    "ts",
    "client_ts",
    "client_seq",
    "source_kind",
    "source_id",
    "details",
)
_COMMON = {
    "v",
    "id",
    "type",
    "exam",
    "attempt",
    "student",
    "ts",
    "client_ts",
    "client_seq",
    "source",
}


def row(partition: int, offset: int, event: dict[str, Any], tz: ZoneInfo) -> list[object]:
    source = event.get("source") or {}
    details = {k: v for k, v in event.items() if k not in _COMMON}
    ts, client_ts = event.get("ts"), event.get("client_ts")
    return [
        partition,
        offset,
        event.get("id"),
        event.get("type"),
        event.get("exam"),
        event.get("attempt", ""),
        event.get("student", ""),
        iso_time(ts if isinstance(ts, int) else None, tz),
        iso_time(client_ts if isinstance(client_ts, int) else None, tz),
        ts,
        client_ts if client_ts is not None else "",
        event.get("client_seq", ""),
        source.get("kind", ""),
        source.get("id", ""),
        orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode() if details else "",
    ]
