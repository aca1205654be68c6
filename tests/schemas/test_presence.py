"""Heartbeat partitions: every attempt in exactly one share, every partition a share."""

from __future__ import annotations

from schemas.presence import heartbeat_partition, split_beats


def test_each_beat_lands_in_its_attempts_partition_and_every_partition_has_a_share() -> None:
    beats = {f"att-{n}": 1_000 + n for n in range(200)}

    shares = split_beats(beats, 4)

    assert len(shares) == 4 and all(shares)
    assert sum(len(share) for share in shares) == len(beats)
    for partition, share in enumerate(shares):
        for attempt, at in share.items():
            assert heartbeat_partition(attempt, 4) == partition and beats[attempt] == at


def test_no_beats_still_gives_an_empty_share_per_partition() -> None:
    assert split_beats({}, 3) == [{}, {}, {}]
    assert split_beats({"a": 1}, 1) == [{"a": 1}]
