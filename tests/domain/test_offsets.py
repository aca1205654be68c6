"""The offset ledger: what a group consumer may commit, without Kafka."""

from __future__ import annotations

import pytest

from domain.offsets import OffsetLedger


def ledger(*partitions: int) -> OffsetLedger:
    book = OffsetLedger()
    book.assign(partitions)
    return book


def test_nothing_handed_out_commits_nothing() -> None:
    assert ledger(0, 1).committable() == {}


def test_commit_stops_at_the_lowest_record_not_landed_even_when_later_ones_landed() -> None:
    book = ledger(0)
    first = book.take({0: (0, 9)})
    second = book.take({0: (10, 19)})
    book.landed(second)
    assert book.committable() == {0: 0}
    book.landed(first)
    assert book.committable() == {0: 20}


def test_only_assigned_partitions_are_committed() -> None:
    book = ledger(0)
    book.landed(book.take({0: (0, 4), 1: (0, 4)}))
    assert book.committable() == {0: 5}
    book.assign([1])
    assert book.committable() == {0: 5, 1: 5}


def test_never_backwards_and_nothing_twice() -> None:
    book = ledger(0)
    book.landed(book.take({0: (0, 4)}))
    book.committed(book.committable())
    assert book.committable() == {}
    book.committed({0: 50})  # e.g. the group's commit, known at assignment
    book.rewind(0, 10)  # history re-read from below it
    book.landed(book.take({0: (10, 30)}))
    assert book.committable() == {}
    book.landed(book.take({0: (31, 60)}))
    assert book.committable() == {0: 61}


def test_floor_holds_the_commit() -> None:
    book = ledger(0, 1)
    book.landed(book.take({0: (0, 9), 1: (0, 9)}))
    assert book.committable(floor={0: 3}) == {0: 3, 1: 10}


def test_records_fetched_before_a_revocation_are_dropped_kept_ones_still_count() -> None:
    book = ledger(0, 1)
    kept = book.take({0: (0, 4)})
    assert book.keep(kept, 0)  # processed before the revocation
    unprocessed = book.take({0: (5, 9), 1: (0, 4)})
    book.revoking([0])
    assert not book.keep(unprocessed, 0), "its next owner processes it"
    assert book.keep(unprocessed, 1), "not revoked"
    assert book.committable() == {0: 0, 1: 0}, "the kept batch has not landed yet"
    book.landed(kept)
    assert book.committable() == {0: 10, 1: 0}
    book.revoked([0])
    book.landed(unprocessed)
    assert book.committable() == {1: 5}


def test_records_of_a_partition_that_came_back_are_kept() -> None:
    book = ledger(0)
    book.revoking([0])
    book.revoked([0])
    again = book.take({0: (7, 8)})  # fetched after the revocation, before the callback
    book.assign([0])
    assert book.keep(again, 0)
    book.landed(again)
    assert book.committable() == {0: 9}


def test_an_empty_span_is_a_bug() -> None:
    with pytest.raises(ValueError):
        ledger(0).take({0: (5, 4)})


def test_pending_counts_leases_not_landed() -> None:
    book = ledger(0, 1)
    lease = book.take({0: (0, 1), 1: (0, 1)})
    assert book.pending() == 1
    book.landed(lease)
    assert book.pending() == 0


def test_records_fetched_before_a_rewind_are_dropped() -> None:
    book = ledger(0, 1)
    book.committed({0: 50})
    stale = book.take({0: (50, 60), 1: (0, 4)})  # fetched before the seek back
    book.rewind(0, 0)
    assert not book.keep(stale, 0), "the seek made them moot: they come again from 0"
    assert book.keep(stale, 1), "other partitions are untouched"
    fresh = book.take({0: (0, 9)})
    assert book.keep(fresh, 0)
    book.landed(stale)
    book.landed(fresh)
    assert book.committable() == {1: 5}, "history re-read below the commit commits nothing"
