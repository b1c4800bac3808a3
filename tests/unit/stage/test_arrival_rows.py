"""A stage's arrivals reach COPY as rows of text (`copy_row`'s whole-line fast path), written byte
for byte as the field-by-field escaping of their work's bytes wrote them, whatever the work holds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lotlens_common.row_sets import copy_row
from lotlens_common.stage.adapters import postgres_arrivals
from lotlens_common.stage.adapters.postgres import CANCELLED, SKIPPED, WAITING, Places
from lotlens_common.stage.adapters.postgres_arrivals import Arrival, enqueue_arrivals
from lotlens_common.stage.work import arriving_translation_work, arriving_vision_work
from tests.unit.copy_row_support import PIECES, reference_copy_row

AWKWARD = 'tab\there, newline\nthere, CR\r, backslash \\N and \\t, quote " é漢\U0001f697 \u2028'


class _Conn:
    """Takes the statement that counts the arrivals, and nothing else."""

    def __init__(self) -> None:
        self.executed = 0

    def execute(self, *_args: Any) -> None:
        self.executed += 1


def _written(monkeypatch: pytest.MonkeyPatch, lots: list[Arrival], status: str,
             cancelled: frozenset[str] = frozenset()) -> bytes:
    """What `enqueue_arrivals` hands to COPY, each job's places following 100."""
    copied: list[bytes] = []

    def places(_conn: object, _stage: str, counts: dict[str, int]) -> dict[str, Places]:
        return {job_id: Places(100, job_id in cancelled) for job_id in counts}

    def append(_conn: object, _statement: str, rows: bytes) -> bool:
        copied.append(rows)
        return True

    monkeypatch.setattr(postgres_arrivals, "take_places", places)
    monkeypatch.setattr(postgres_arrivals, "append_rows", append)
    conn = _Conn()
    new = enqueue_arrivals(conn, "vision", lots, status)  # type: ignore[arg-type]
    assert new == {(lot.job_id, lot.lot_id) for lot in lots} and conn.executed == 1
    return b"".join(copied)


def _reference(lots: list[Arrival], status: str, cancelled: frozenset[str] = frozenset()) -> bytes:
    """The rows as the work's bytes were written field by field before."""
    place: dict[str, int] = {}
    rows = []
    for lot in lots:
        place[lot.job_id] = place.get(lot.job_id, 100) + 1
        lot_status = CANCELLED if status == WAITING and lot.job_id in cancelled else status
        rows.append(reference_copy_row(("vision", lot.job_id, lot.lot_id, lot.client_id, str(lot.total_lots),
                                        lot.work, lot_status, str(place[lot.job_id]))))
    return b"".join(rows)


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice([*PIECES, AWKWARD]) for _ in range(rng.randint(0, 4))).replace("\x00", "")


@pytest.mark.parametrize("seed", range(4))
def test_random_arrivals_are_copied_as_their_work_s_bytes_were(monkeypatch: pytest.MonkeyPatch,
                                                               seed: int) -> None:
    rng = random.Random(seed)
    lots = []
    for i in range(300):
        job_id = rng.choice(["job-a", "job-b", _random_text(rng)])
        work = (arriving_vision_work(_random_text(rng), (f"http://img.test/{_random_text(rng)}.png",),
                                     ("en", "de"), {"traceparent": _random_text(rng)}) if i % 2 else
                arriving_translation_work(f"<p>{_random_text(rng)}</p>", ("en", "ru"), 3,
                                          (_random_text(rng),), {}))
        lots.append(Arrival(job_id, f"lot-{i}-{_random_text(rng)}", _random_text(rng), rng.randint(1, 50_000),
                            work))
    cancelled = frozenset({"job-b"})
    for status in (WAITING, SKIPPED):
        assert _written(monkeypatch, lots, status, cancelled) == _reference(lots, status, cancelled)


def test_arrivals_reach_copy_as_text_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A row holding bytes is escaped field by field: 2.6 us a lot where text is joined and checked
    # whole in 0.9 (two arrivals a lot, one at each stage).
    seen: list[type] = []

    def recording(fields: tuple[str | bytes | None, ...]) -> bytes:
        seen.extend(type(field) for field in fields)
        return copy_row(fields)

    monkeypatch.setattr(postgres_arrivals, "copy_row", recording)
    lots = [Arrival("job-a", f"lot-{i}", "c1", 2, arriving_vision_work("Camry", ("http://img.test/a.png",),
                                                                        ("en",), {})) for i in range(2)]
    assert _written(monkeypatch, lots, WAITING) == _reference(lots, WAITING)
    assert set(seen) == {str}
