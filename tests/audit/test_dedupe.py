"""Resends are dropped per attempt by id, with the reducer's memory bound."""

from __future__ import annotations

from audit.dedupe import RecentIds, dedupe_key


def test_a_resend_is_dropped_once_seen_and_other_attempts_are_separate() -> None:
    recent = RecentIds()
    assert recent.first_time("a1", "x") and recent.first_time("a2", "x")
    assert not recent.first_time("a1", "x")
    assert recent.dropped == 1


def test_memory_is_bounded_per_attempt() -> None:
    recent = RecentIds(per_key=3)
    for i in range(4):
        assert recent.first_time("a1", f"e{i}")
    assert recent.first_time("a1", "e0")  # forgotten: beyond the reducer's window too
    assert not recent.first_time("a1", "e3")


def test_exam_wide_events_have_their_own_key() -> None:
    assert dedupe_key("e1", None) == "exam:e1" and dedupe_key("e1", "a1") == "a1"
