"""The simulator's delivery accounting: latency, loss, coalescing, duplicates, order."""

from __future__ import annotations

import math

from simulator.accounting import (
    HISTOGRAM_EDGES_MS,
    ConnectResult,
    Receipt,
    account,
    connect_summary,
    histogram,
    json_safe,
    latency_per_second,
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


def test_histogram_buckets_are_half_open_and_count_what_falls_outside() -> None:
    result = histogram(
        [0.0, -3.0, 1.0, 1.5, 2.0, 9.99, 10.0, 12.0, 13.0, 100.0, 5.0e4],
        edges=[1.0, 2.0, 10.0, 13.0, 1000.0],
    )
    assert result == {
        "edges_ms": [1.0, 2.0, 10.0, 13.0, 1000.0],
        "counts": [2, 2, 2, 2],
        "below": 2,
        "above": 1,
    }


def test_histogram_edges_are_whole_ms_then_ten_per_decade_up_to_31_6_s() -> None:
    edges = HISTOGRAM_EDGES_MS
    assert edges[:10] == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
    assert edges[10:21] == (13.0, 16.0, 20.0, 25.0, 32.0, 40.0, 50.0, 63.0, 79.0, 100.0, 126.0)
    assert edges[-1] == 31623.0
    assert list(edges) == sorted(set(edges))
    # The brief's targets (10, 50 ms) and the 100 ms budget are edges: exact shares under them.
    assert {10.0, 50.0, 100.0} <= set(edges)


def test_histogram_of_nothing_is_all_zero() -> None:
    result = histogram([])
    assert result["counts"] == [0] * (len(HISTOGRAM_EDGES_MS) - 1)
    assert (result["below"], result["above"]) == (0, 0)


def test_latency_per_second_groups_by_send_second_with_empty_seconds_as_nan() -> None:
    samples = [(10_000, 5.0), (10_999, 7.0), (10_500, 6.0), (12_000, 40.0), (9_999, 1.0)]
    result = latency_per_second(samples, 10_000)
    assert result["start_ms"] == 10_000
    assert result["count"] == [3, 0, 1]
    assert result["p50"][0] == 6.0
    assert result["p99"][0] == 7.0
    assert result["max"][0] == 7.0
    assert math.isnan(result["p50"][1]) and math.isnan(result["max"][1])
    assert (result["p50"][2], result["p99"][2], result["max"][2]) == (40.0, 40.0, 40.0)


def test_latency_per_second_p99_is_nearest_rank_within_the_second() -> None:
    samples = [(0, float(ms)) for ms in range(1, 101)] + [(1000, 3.0)]
    result = latency_per_second(samples, 0)
    assert (result["count"], result["p50"], result["p99"], result["max"]) == (
        [100, 1],
        [51.0, 3.0],
        [99.0, 3.0],
        [100.0, 3.0],
    )


def test_delivery_json_carries_histograms_and_latency_per_send_second() -> None:
    sent = {"a1": {1: 1000, 2: 2000, 3: 2500}, "a2": {1: 1200}}
    receipts = {
        "p": [
            Receipt("a1", 10, 1, 1004, 1001),
            Receipt("a2", 1, 1, 1215, 1203),
            Receipt("a1", 11, 2, 2150, 2002),
            Receipt("a1", 12, 3, 2540, 2540),
        ]
    }
    delivery = account(sent, receipts, {"p": ["a1", "a2"]}).to_json()
    hist = delivery["latency_histogram"]
    assert hist["edges_ms"] == list(HISTOGRAM_EDGES_MS)
    assert sum(hist["counts"]) == 4 and (hist["below"], hist["above"]) == (0, 0)
    # 4 ms -> [4, 5); 15 ms -> [13, 16); 40 ms -> [40, 50); 150 ms -> [126, 158)
    edges = HISTOGRAM_EDGES_MS
    assert {edges[i]: n for i, n in enumerate(hist["counts"]) if n} == {
        4.0: 1,
        13.0: 1,
        40.0: 1,
        126.0: 1,
    }
    inbound = delivery["inbound_histogram"]
    assert {edges[i]: n for i, n in enumerate(inbound["counts"]) if n} == {
        1.0: 1,
        2.0: 1,
        3.0: 1,
        40.0: 1,
    }
    per_s = delivery["latency_per_second"]
    assert per_s["start_ms"] == 1000  # the first send
    assert per_s["count"] == [2, 2]
    # Nearest rank over two samples: p50 is the lower one, p99 the higher.
    assert (per_s["p50"], per_s["p99"], per_s["max"]) == ([4, 40], [15, 150], [15, 150])
    assert delivery["latency_ms"]["max"] == 150.0  # existing fields keep their meaning


def test_latency_seconds_can_start_at_a_given_time() -> None:
    sent = {"a1": {1: 3500}}
    receipts = {"p": [Receipt("a1", 1, 1, 3510)]}
    per_s = account(sent, receipts, {"p": ["a1"]}, start_ms=1000).to_json()["latency_per_second"]
    assert (per_s["start_ms"], per_s["count"], per_s["p50"][2]) == (1000, [0, 0, 1], 10.0)


def test_an_empty_run_gives_empty_per_second_latencies_and_zero_histograms() -> None:
    delivery = account({}, {}, {"p": []}).to_json()
    assert delivery["latency_per_second"] == {
        "start_ms": 0,
        "count": [],
        "p50": [],
        "p99": [],
        "max": [],
    }
    assert sum(delivery["latency_histogram"]["counts"]) == 0


def test_connect_summary_carries_a_histogram_of_successful_connects() -> None:
    results = [
        ConnectResult(True, 5.5),
        ConnectResult(True, 120.0),
        ConnectResult(False, 30000.0, "TimeoutError"),
    ]
    hist = connect_summary(results)["connect_histogram"]
    edges = HISTOGRAM_EDGES_MS
    assert {edges[i]: n for i, n in enumerate(hist["counts"]) if n} == {5.0: 1, 100.0: 1}
    assert hist["above"] == 0  # the failed one is not a connect time
