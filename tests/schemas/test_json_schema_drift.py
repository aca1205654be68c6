"""The JSON Schema files in schemas/json/ must match the pydantic models they are exported from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.export import SCHEMA_DIR, drifted, main, render_all, write

EXPECTED_FILES = {
    "exam-event.v1.json",
    "presence-record.v1.json",
    "gateway-heartbeat.v1.json",
    "log-probe.v1.json",
    "delivery-batch.v1.json",
    "client-frame.v1.json",
    "server-frame.v1.json",
    "legacy-frame.json",
    "attempt-state.v1.json",
    "student-view.v1.json",
}


def test_committed_files_match_the_models() -> None:
    problems = drifted(SCHEMA_DIR)
    assert problems == [], f"{problems} drifted: run `python -m schemas.export` and commit them"


def test_every_top_level_model_is_exported() -> None:
    assert set(render_all()) == EXPECTED_FILES


def test_output_is_deterministic_sorted_and_newline_terminated() -> None:
    first, second = render_all(), render_all()
    assert first == second
    for name, text in first.items():
        assert text.endswith("}\n") and not text.endswith("\n\n"), name
        parsed = json.loads(text)
        assert text == json.dumps(parsed, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        assert parsed["$id"] == name
        assert parsed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_union_tags_are_required_even_where_the_model_defaults_them() -> None:
    # pydantic rejects union input without the tag, so the exported schema must too.
    events = json.loads(render_all()["exam-event.v1.json"])
    assert events["discriminator"]["propertyName"] == "type"
    for name, definition in events["$defs"].items():
        if name != "EventSource":
            assert "type" in definition["required"], name
    batch = json.loads(render_all()["delivery-batch.v1.json"])
    for name in ("ForProctors", "ForStudents", "WatchReady"):
        assert "kind" in batch["$defs"][name]["required"], name


def test_event_models_forbid_unknown_fields_in_the_schema() -> None:
    events = json.loads(render_all()["exam-event.v1.json"])
    assert all(d["additionalProperties"] is False for d in events["$defs"].values())
    legacy = json.loads(render_all()["legacy-frame.json"])
    assert legacy["additionalProperties"] is True


def test_check_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    assert sorted(write(tmp_path)) == sorted(EXPECTED_FILES)
    assert drifted(tmp_path) == []
    (tmp_path / "student-view.v1.json").write_text("{}\n")
    (tmp_path / "exam-event.v1.json").unlink()
    (tmp_path / "old-thing.v0.json").write_text("{}\n")

    assert drifted(tmp_path) == ["exam-event.v1.json", "old-thing.v0.json", "student-view.v1.json"]


def test_cli_check_fails_listing_drifted_files_then_write_fixes_them(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "server-frame.v1.json").write_text("{}\n")
    lines: list[str] = []

    assert main(["--check", "--dir", str(tmp_path)], out=lines.append) == 1
    assert any(line.endswith("server-frame.v1.json") for line in lines)
    assert not any("client-frame" in line for line in lines)

    assert main(["--dir", str(tmp_path)], out=lines.append) == 0
    assert main(["--check", "--dir", str(tmp_path)], out=lines.append) == 0
    assert (tmp_path / "server-frame.v1.json").read_text() == render_all()["server-frame.v1.json"]


def test_cli_check_on_an_empty_directory_fails(tmp_path: Path) -> None:
    assert main(["--check", "--dir", str(tmp_path / "nowhere")], out=lambda _: None) == 1


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_schema_file_names_a_title_and_description(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    assert schema["title"]
    assert schema["description"]
