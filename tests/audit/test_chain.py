"""The export's hash chain: intact files verify; each kind of tampering is named by line."""

from __future__ import annotations

import orjson

from audit.chain import ANCHOR, ChainWriter, link_hash, verify


def export_lines(n: int = 5) -> list[bytes]:
    chain = ChainWriter()
    lines = [chain.header({"exam": "e1"})]
    for i in range(n):
        event = {"id": f"ev-{i}", "exam": "e1", "type": "student.status", "ts": 1000 + i}
        lines.append(chain.event(0, 10 + i, event))
    lines.append(chain.trailer({}))
    return lines


def edited(line: bytes, **changes: object) -> bytes:
    obj = orjson.loads(line)
    obj["event"] = obj["event"] | changes
    return orjson.dumps(obj) + b"\n"


def test_intact_export_verifies_with_its_final_hash() -> None:
    lines = export_lines()
    verdict = verify(lines)
    assert verdict.ok and verdict.events == 5 and verdict.lines == 7
    assert orjson.loads(lines[0])["prev_hash"] == ANCHOR
    assert verdict.final_hash == orjson.loads(lines[-1])["hash"]
    assert verify(lines, expect_final=verdict.final_hash).ok


def test_whitespace_does_not_matter_but_values_do() -> None:
    lines = export_lines()
    lines[2] = (
        orjson.dumps(orjson.loads(lines[2]), option=orjson.OPT_INDENT_2).replace(b"\n", b" ")
        + b"\n"
    )
    assert verify(lines).ok


def test_edited_line_is_named_changed() -> None:
    lines = export_lines()
    lines[3] = edited(lines[3], ts=999_999)
    verdict = verify(lines)
    assert not verdict.ok
    assert (verdict.problem, verdict.line, verdict.event_id) == ("changed", 4, "ev-2")


def test_deleted_line_is_named_by_the_line_after_it() -> None:
    lines = export_lines()
    del lines[3]
    verdict = verify(lines)
    assert (verdict.problem, verdict.line, verdict.event_id) == ("removed", 4, "ev-3")


def test_inserted_line_with_a_copied_hash_is_named_inserted() -> None:
    lines = export_lines()
    lines.insert(3, edited(lines[2], id="forged"))
    verdict = verify(lines)
    assert (verdict.problem, verdict.line, verdict.event_id) == ("inserted", 4, "forged")


def test_inserted_line_with_a_recomputed_hash_is_still_found() -> None:
    lines = export_lines()
    previous = orjson.loads(lines[2])
    forged = {
        "kind": "event",
        "seq": {"partition": 0, "offset": 11},
        "prev_hash": previous["hash"],
        "event": {"id": "forged", "exam": "e1", "type": "student.status", "ts": 1001},
    }
    forged["hash"] = link_hash(forged)
    lines.insert(3, orjson.dumps(forged) + b"\n")
    verdict = verify(lines)
    assert (verdict.problem, verdict.line, verdict.event_id) == ("inserted", 4, "forged")


def test_truncation_and_a_rewritten_tail_are_caught() -> None:
    lines = export_lines()
    assert verify(lines[:-1]).problem == "truncated"
    assert verify(lines[:-2]).problem == "truncated"
    # Rewriting everything from line 4 on (hashes recomputed) is consistent in itself; only
    # the final hash kept elsewhere exposes it.
    original_final = verify(lines).final_hash
    chain = ChainWriter()
    forged = [chain.header({"exam": "e1"})]
    for i in range(5):
        event = {"id": f"ev-{i}", "exam": "e1", "type": "student.status", "ts": 1000 + i + (i == 3)}
        forged.append(chain.event(0, 10 + i, event))
    forged.append(chain.trailer({}))
    assert verify(forged).ok
    assert verify(forged, expect_final=original_final).problem == "final_mismatch"


def test_garbage_and_lines_after_the_trailer_are_reported() -> None:
    lines = export_lines()
    assert verify([*lines[:2], b"not json\n", *lines[2:]]).problem in ("malformed",)
    after = verify([*lines, lines[1]])
    assert (after.problem, after.line) == ("inserted", 8)
    # A header dropped: the first event no longer starts from the anchor.
    assert verify(lines[1:]).problem == "removed"
