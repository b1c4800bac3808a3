"""A stage whose refusals in a row an admitted batch ended, its last hold still running: every view
says it is held (batches are: `quota.queue_held` reads only the time left), and why, without
"0 refusals in a row" and a queue said to be full that the admitted batch showed had room."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lotlens_admin.job_report import JobReport, OutboxLine, QueueHoldLine, StageLine
from lotlens_admin.jobs import render
from lotlens_admin.stages import hold_line
from lotlens_common.stage.adapters.postgres_queue_hold import RefusalSeries

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _series(refusals: int) -> RefusalSeries:
    return RefusalSeries("vision", NOW + timedelta(minutes=3), refusals, 180.0, NOW - timedelta(minutes=1),
                         True)


def _job_shown(refusals: int) -> str:
    series = _series(refusals)
    hold = QueueHoldLine(series.held_until.isoformat(), refusals, series.left_s,
                         series.refused_at.isoformat(), True, False)
    stage = StageLine("vision", False, {"waiting": 1}, {}, [], 0, [], hold)
    return "\n".join(render(JobReport("job-1", None, [stage], OutboxLine({}, None))))


def test_a_hold_whose_series_an_admitted_batch_ended_is_shown_held_with_why() -> None:
    for shown in (hold_line(_series(0)), _job_shown(0)):
        assert "queue held until 2026-12-07T06:03:00+00:00" in shown, shown
        assert "0 refusals" not in shown and "is full" not in shown, shown
        assert "a batch created since the last refusal was admitted" in shown, shown


def test_a_hold_with_refusals_in_a_row_says_the_queue_is_full() -> None:
    for shown in (hold_line(_series(2)), _job_shown(2)):
        assert "queue held until 2026-12-07T06:03:00+00:00 (2 refusals in a row)" in shown, shown
        assert "queue for the model is full" in shown, shown
