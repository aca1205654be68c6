"""Times on the command line: zones, ranges, formatting."""

from __future__ import annotations

import pytest

from audit.errors import BadArgument
from audit.times import TimeRange, format_duration, format_time, iso_time, parse_time, zone

JAKARTA = zone("Asia/Jakarta")


def test_zone_less_times_are_in_the_exam_zone_and_offsets_win() -> None:
    assert parse_time("2026-01-01T07:00:00", JAKARTA) == 1_767_225_600_000
    assert parse_time("2026-01-01T00:00:00Z", JAKARTA) == 1_767_225_600_000
    assert parse_time("2026-01-01T01:00:00+01:00", JAKARTA) == 1_767_225_600_000
    assert parse_time("1767225600000", JAKARTA) == 1_767_225_600_000


def test_bad_inputs_are_bad_arguments() -> None:
    with pytest.raises(BadArgument):
        parse_time("yesterday", JAKARTA)
    with pytest.raises(BadArgument):
        zone("Mars/Olympus")
    with pytest.raises(BadArgument):
        TimeRange(10, 5)


def test_range_is_inclusive_and_widened_by_the_slack_for_lookups() -> None:
    span = TimeRange(100, 200)
    assert 100 in span and 200 in span and 99 not in span and 201 not in span
    assert (span.lookup_start(50), span.lookup_end(50)) == (50, 251)
    assert TimeRange().lookup_start(50) is None and 5 in TimeRange()


def test_formatting_in_the_zone() -> None:
    assert format_time(1_767_225_600_123, JAKARTA) == "2026-01-01 07:00:00.123 WIB"
    assert iso_time(1_767_225_600_000, JAKARTA) == "2026-01-01T07:00:00.000+07:00"
    assert format_time(None, JAKARTA) == ""
    assert (format_duration(2_500), format_duration(75_000), format_duration(3_723_000)) == (
        "2.5s",
        "1m 15s",
        "1h 02m 03s",
    )
    assert format_duration(None) == "open"
