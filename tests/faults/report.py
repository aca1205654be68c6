"""The suite's table: one row per fault, as JSON and as markdown."""

from __future__ import annotations

from typing import Any


def _flat(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:g} s"


def converged_cell(row: dict[str, Any]) -> str:
    """Seconds after the fault until every view held the log's state at the fault's end;
    **no** when a view still differed from the log after the load (and the drain) ended."""
    if row.get("error"):
        return "—"
    per = row.get("converged_s", {})
    bad = [name for name, at in per.items() if at is None]
    if bad:
        text = "**no**: " + ", ".join(bad)
    elif row.get("caught_up_all_s") is not None:
        text = _s(row["caught_up_all_s"])
    else:
        text = f"after the load ({_s(row.get('converged_all_s'))})"
    if row.get("fresh_snapshot_wrong"):
        text += "; **fresh snapshot wrong**"
    return text


def recovered_cell(row: dict[str, Any]) -> str:
    if row.get("error"):
        return "—"
    first = row.get("first_ack_after_fault_s")
    backlog = row.get("backlog_acked_s")
    return f"{_s(first)} / {'**never**' if backlog is None else _s(backlog)}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| fault | acked lost | dups (resent / other) | recovered (first ack / backlog) "
        "| converged in | false offline | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("error"):
            lines.append(
                f"| {row['label']} | — | — | — | — | — | harness error: {_flat(row['error'])} |"
            )
            continue
        lost = f"**{row['acked_lost']}**" if row["acked_lost"] else "0"
        dups = f"{row['dups']} ({row['dups_resent']} / {row['dups_unexplained']})"
        if row["dups_unexplained"]:
            dups = f"**{dups}**"
        false_offline = f"{row['false_offline']} / {row['open_throughout']}"
        if row["false_offline"]:
            reasons = ", ".join(f"{r}" for r in sorted(row["false_offline_reasons"]))
            false_offline = f"**{false_offline}** ({reasons})"
        notes = row.get("notes", "").replace("|", "/")
        lines.append(
            f"| {row['label']} | {lost} | {dups} | {recovered_cell(row)} | {converged_cell(row)} "
            f"| {false_offline} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def summary_line(row: dict[str, Any]) -> str:
    verdict = "ok" if not row["violations"] else "VIOLATED: " + "; ".join(row["violations"])
    return f"{row['fault']}: {verdict} ({row['wall_s']} s)"
