"""The Grafana dashboards (deploy/grafana/): the committed JSON is what the generator makes,
and every panel asks Prometheus for series that exist: metrics a service exports, series a
recording rule records. Whether each query returns data from a real system is
tests/e2e/test_dashboards.py."""

from __future__ import annotations

import json
import re
from typing import Any

from deploy.grafana import build
from tests.deploy.test_prometheus_rules import exported_names, named_metrics, rules


def committed() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in build.DASHBOARDS_DIR.glob("*.json")}


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        if panel["type"] != "row"
        for target in panel.get("targets", [])
    ]


def test_the_committed_dashboards_are_what_the_generator_makes() -> None:
    generated = build.dashboards()
    assert sorted(generated) == sorted(committed()), "python -m deploy.grafana.build"
    for name, board in generated.items():
        path = build.DASHBOARDS_DIR / f"{name}.json"
        assert path.read_text() == build.render(board), (
            f"{path.name}: python -m deploy.grafana.build"
        )
    assert build.main(["--check"]) == 0


def test_overview_per_service_and_exam_day_dashboards_exist_with_unique_uids() -> None:
    boards = committed()
    assert {"overview", "exam-day", "gateway", "router", "status", "notifier"} <= set(boards)
    uids = [board["uid"] for board in boards.values()]
    assert len(uids) == len(set(uids))


def test_every_panel_has_a_query_on_the_chosen_prometheus() -> None:
    for name, board in committed().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus", name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_every_series_a_panel_queries_is_exported_or_recorded() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    exprs = "\n".join(expr for board in committed().values() for _, expr in panel_queries(board))
    missing_metrics = sorted(named_metrics(exprs) - exported_names())
    assert missing_metrics == []
    used_records = set(re.findall(r"\b([a-z_]+:[a-z_]+:[a-z0-9_]+)\b", exprs))
    assert used_records and used_records <= recorded
