"""The dashboard keeps up with 1,000 students: every row applied, none stale, all tiles shown.

Frame times are measured and reported by ``python -m tests.browser.dashboard_load`` (see
docs/dashboard.md); here only the functional outcome is asserted.
"""

from __future__ import annotations

import pytest

from tests.browser.dashboard_load import STUDENTS, measure

pytestmark = pytest.mark.browser


async def test_thousand_students_at_design_rate_are_all_applied() -> None:
    [result] = await measure([200], seconds=3.0)
    assert result["sent"] >= 300
    assert result["applied"] == result["sent"]
    assert result["stale"] == 0
    assert result["shownRows"] == STUDENTS
    assert result["renders"] < result["sent"]  # batched: many rows per paint, not one paint per row
