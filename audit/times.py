"""Times on the command line and in reports: parsing, ranges, formatting in the exam's zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from audit.errors import BadArgument


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadArgument(f"unknown time zone {name!r}") from exc


def parse_time(text: str, tz: ZoneInfo) -> int:
    """Epoch milliseconds from epoch ms digits or ISO 8601; a time without offset is in ``tz``."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadArgument(f"not a time: {text!r} (use ISO 8601 or epoch milliseconds)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return round(moment.timestamp() * 1000)


def format_time(ms: int | None, tz: ZoneInfo) -> str:
    """``2026-11-22 19:04:05.123 WIB``; empty for no time."""
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, tz)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d} {moment.tzname()}"


def iso_time(ms: int | None, tz: ZoneInfo) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


def format_duration(ms: int | None) -> str:
    if ms is None:
        return "open"
    seconds, millis = divmod(max(0, ms), 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}.{millis // 100}s"


@dataclass(frozen=True)
class TimeRange:
    """Inclusive range of event ``ts``; None = unbounded on that side."""

    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise BadArgument("--from is after --to")

    def __contains__(self, ts: int) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts <= self.end)

    def lookup_start(self, slack_ms: int) -> int | None:
        """Record timestamp to look up the first offset from (earlier by the clock slack)."""
        return None if self.start is None else max(0, self.start - slack_ms)

    def lookup_end(self, slack_ms: int) -> int | None:
        """Record timestamp from which on no record can be in range (later by the slack)."""
        return None if self.end is None else self.end + slack_ms + 1
