"""proctor-audit's command line: exit codes, options in either place, help an auditor can use."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from audit.__main__ import _parser, main
from audit.times import zone
from tests.audit.test_chain import export_lines

COMMANDS = ("export", "verify", "at", "rebuild", "alerts")


@pytest.fixture
def export_file(tmp_path: Path) -> Path:
    path = tmp_path / "exam.jsonl"
    path.write_bytes(b"".join(export_lines()))
    return path


def _trailer(path: Path) -> dict[str, str]:
    trailer: dict[str, str] = orjson.loads(path.read_bytes().splitlines()[-1])
    return trailer


def test_verify_of_a_missing_file_is_an_error_not_a_broken_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path / "nowhere.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2  # a directory


def test_verify_exit_codes_intact_0_broken_1(
    export_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(export_file)]) == 0
    assert "intact: 5 events" in capsys.readouterr().out
    lines = export_file.read_bytes().splitlines(keepends=True)
    del lines[2]
    export_file.write_bytes(b"".join(lines))
    assert main(["verify", str(export_file)]) == 1
    assert "BROKEN at line 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--quiet", "verify", "{path}"],
        ["verify", "{path}", "--quiet"],
        ["verify", "--quiet", "{path}"],
    ],
)
def test_quiet_goes_before_or_after_the_command(argv: list[str], export_file: Path) -> None:
    args = _parser().parse_args([a.format(path=export_file) for a in argv])
    assert args.quiet is True
    assert main([a.format(path=export_file) for a in argv]) == 0


def test_without_quiet_the_flag_is_off() -> None:
    assert getattr(_parser().parse_args(["verify", "x"]), "quiet", False) is False


def test_expect_final_takes_the_printed_hash_or_the_trailer_final_hash_field(
    export_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trailer = _trailer(export_file)
    assert trailer["hash"] != trailer["final_hash"]  # the trap: two hashes close a file

    assert main(["verify", str(export_file), "--expect-final", trailer["hash"]]) == 0
    printed = capsys.readouterr().out
    assert f"final hash {trailer['hash']}" in printed
    assert trailer["final_hash"] in printed
    assert main(["verify", str(export_file), "--expect-final", trailer["final_hash"]]) == 0
    assert main(["verify", str(export_file), "--expect-final", "0" * 64]) == 1
    assert "final_mismatch" in capsys.readouterr().out


@pytest.mark.parametrize("command", (None, *COMMANDS))
def test_help_is_plain_text_and_every_zone_it_names_is_accepted(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"] if command else ["--help"])
    text = capsys.readouterr().out

    assert exited.value.code == 0
    assert "``" not in text
    assert not re.search(r"\[/?(bold|b|i|red|green)\]", text)
    assert "exit codes:" in text
    for name in re.findall(r"\b[A-Z][a-z]+/[A-Z][A-Za-z_]+\b", text):
        zone(name)  # raises BadArgument for a zone the tool refuses
