"""docs/settings.md must match the settings classes it is rendered from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.settings_fields import settings_of
from services.settings_doc import DOC, TOOLS, drifted, main, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_matches_the_settings() -> None:
    assert not drifted(), f"{DOC} drifted: run `python -m services.settings_doc --write`"


@pytest.mark.parametrize("tool", [tool for tool, _, _ in TOOLS])
def test_every_setting_of_every_tool_is_documented_with_a_meaning(tool: str) -> None:
    settings_cls = next(cls for name, cls, _ in TOOLS if name == tool)
    text = render()
    for setting in settings_of(settings_cls):
        assert f"`{setting.env}`" in text
        assert setting.description, f"{setting.env} has no Field description"


def test_reference_is_the_same_on_every_machine_and_every_run() -> None:
    text = render()
    assert text == render()
    assert str(ROOT) not in text
    assert not re.search(r"-[0-9a-f]{12}\b", text)  # generated instance ids are not defaults


def test_secrets_are_described_but_their_defaults_not_printed() -> None:
    text = render()
    assert "dev-only-secret" not in text
    line = next(line for line in text.splitlines() if "PROCTOR_GATEWAY__TOKEN_SECRET" in line)
    assert "(secret)" in line


def test_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "settings.md"
    assert main(["--check", "--path", str(path)]) == 1
    assert main(["--write", "--path", str(path)]) == 0
    assert main(["--check", "--path", str(path)]) == 0
    path.write_text(path.read_text().replace("bootstrap servers", "somewhere"))
    assert main(["--check", "--path", str(path)]) == 1
