"""``rebuild --repair`` racing a running status service: the service's forward-only writes of
events after the repair's log span win, and that is not a finding (exit 0), not "differences
left" (exit 1)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapters.dynamo_store import DynamoStatusStore, PutOutcome
from adapters.settings import CommonSettings
from audit import commands
from audit.commands import rebuild
from audit.sample_exam import simulate
from audit.settings import Settings
from schemas.views import StudentView
from tests.audit.conftest import write_log
from tests.conftest import unique

pytestmark = pytest.mark.integration


async def test_a_repair_racing_the_live_service_leaves_no_finding(
    settings: CommonSettings,
    audit: Settings,
    table: DynamoStatusStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exam = unique("exam")
    await write_log(settings, simulate(exam, students=6, steps=10, seed=3))
    lost = await rebuild(audit, exam)
    raced = lost.expected["s00003"]
    newer = raced.model_copy(update={"seq": raced.seq + 1000, "answered": raced.answered + 1})

    class LiveStore(DynamoStatusStore):
        """The status service lands a newer state of s00003 just before the repair writes."""

        async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]:
            await super().put_first_attempt([newer])
            return await super().put_first_attempt(views)

    monkeypatch.setattr(commands, "DynamoStatusStore", LiveStore)
    repaired = await rebuild(audit, exam, repair=True)
    assert repaired.after_repair == [], "nothing is wrong: the live service is ahead"
    assert {d.student for d in repaired.moved_on} == {"s00003"}
    assert repaired.written == 5 and repaired.snapshot_behind == []
    assert await table.get(exam, "s00003") == newer, "the repair never rolls it back"
