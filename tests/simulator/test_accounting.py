"""The simulator's delivery accounting: latency, loss, coalescing, duplicates, order."""

from __future__ import annotations

import math

from simulator.accounting import (
    ConnectResult,
    Receipt,
    account,
    connect_summary,
    json_safe,
    per_second,
    percentile,
    summary,
)


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert math.isnan(percentile([], 0.5))


def test_summary_has_every_quantile_max_and_mean() -> None:
    result = summary([3.0, 1.0, 2.0])
    assert result["p50"] == 2.0
    assert result["max"] == 3.0
    assert result["mean"] == 2.0
    assert set(result) == {"p50", "p90", "p95", "p99", "p99.9", "min", "max", "mean"}


def test_every_update_seen_gives_its_latency_and_the_final_state() -> None:
    sent = {"a1": {1: 1000, 2: 2000}}
    receipts = {"p": [Receipt("a1", 10, 1, 1010, 1001), Receipt("a1", 11, 2, 2030, 2002)]}
    report = account(sent, receipts, {"p": ["a1"]})
    tally = report.per_proctor["p"]
    assert (tally.seen, tally.lost, tally.superseded, tally.final_state_missing) == (2, 0, 0, 0)
    assert sorted(report.latencies_ms) == [10.0, 30.0]
    assert sorted(report.inbound_ms) == [1.0, 2.0]


def test_update_replaced_by_a_newer_state_is_superseded_not_lost() -> None:
    sent = {"a1": {1: 1000, 2: 1001, 3: 1002}}
    receipts = {"p": [Receipt("a1", 10, 3, 1020)]}
    tally = account(sent, receipts, {"p": ["a1"]}).per_proctor["p"]
    assert (tally.seen, tally.superseded, tally.lost) == (1, 2, 0)


def test_updates_after_the_last_arrival_are_lost_and_the_final_state_missing() -> None:
    sent = {"a1": {1: 1000, 2: 2000, 3: 3000}}
    receipts = {"p": [Receipt("a1", 10, 1, 1020)]}
    tally = account(sent, receipts, {"p": ["a1"]}).per_proctor["p"]
    assert (tally.seen, tally.lost, tally.final_state_missing) == (1, 2, 1)


def test_an_attempt_nobody_delivered_is_all_lost() -> None:
    sent = {"a1": {1: 1000}, "a2": {1: 1000}}
    report = account(sent, {"p": [Receipt("a1", 1, 1, 1005)]}, {"p": ["a1", "a2"]})
    assert report.total("lost") == 1
    assert report.to_json()["proctors_with_loss"] == 1


def test_each_proctor_is_accounted_for_its_own_attempts_only() -> None:
    sent = {"a1": {1: 1000}, "a2": {1: 1000}}
    receipts = {"p1": [Receipt("a1", 1, 1, 1004)], "p2": [Receipt("a2", 1, 1, 1008)]}
    report = account(sent, receipts, {"p1": ["a1"], "p2": ["a2"]})
    assert report.total("seen") == 2
    assert report.total("lost") == 0
    assert sorted(report.latencies_ms) == [4.0, 8.0]


def test_repeated_and_stale_rows_are_counted_and_not_measured_twice() -> None:
    sent = {"a1": {1: 1000, 2: 2000}}
    receipts = {
        "p": [
            Receipt("a1", 10, 1, 1010),
            Receipt("a1", 10, 1, 1500),  # the same row again
            Receipt("a1", 11, 2, 2010),
            Receipt("a1", 10, 1, 2020),  # an older row after a newer one
        ]
    }
    report = account(sent, receipts, {"p": ["a1"]})
    tally = report.per_proctor["p"]
    assert (tally.duplicates, tally.out_of_order, tally.seen) == (1, 1, 2)
    assert sorted(report.latencies_ms) == [10.0, 10.0]
    assert report.to_json()["duplicate_examples"][0]["at_ms"] == 1500


def test_connect_summary_counts_failures_by_error() -> None:
    results = [
        ConnectResult(True, 5.0),
        ConnectResult(True, 15.0),
        ConnectResult(False, 30000.0, "TimeoutError"),
    ]
    result = connect_summary(results)
    assert (result["attempted"], result["succeeded"], result["failed"]) == (3, 2, 1)
    assert result["errors"] == {"TimeoutError": 1}
    assert result["connect_ms"]["max"] == 15.0


def test_per_second_buckets_from_the_start_and_drops_earlier_times() -> None:
    assert per_second([500, 1000, 1100, 1999, 3500, 200], 1000) == [3, 0, 1]


def test_json_safe_turns_nan_into_null() -> None:
    assert json_safe({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


def test_a_first_row_with_seq_zero_is_not_a_duplicate() -> None:
    receipts = {"p": [Receipt("a1", 0, 0, 900), Receipt("a1", 10, 1, 1010)]}
    report = account({"a1": {1: 1000}}, receipts, {"p": ["a1"]})
    assert report.total("duplicates") == 0
    assert report.total("seen") == 1
