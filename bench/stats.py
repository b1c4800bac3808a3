"""Medians, percentiles and the result record every scenario returns."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank on sorted values (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


@dataclass
class Row:
    """One line of the report: a measured figure, its floor and their ratio.

    `higher_is_better` says whether the figure is a rate (ratio = floor / measured) or a time or
    size (ratio = measured / floor): either way a ratio of 1.0 means "as good as the floor" and
    5.0 means "five times worse". The ratio is the median of the per-run ratios (each run's
    floor was measured right next to it), so load from other processes mostly cancels out.
    """

    scenario: str
    metric: str
    unit: str
    measured: list[float]
    floor: list[float]
    higher_is_better: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def ratios(self) -> list[float]:
        """Per-run ratios (runs without a floor are skipped)."""
        pairs = zip(self.measured, self.floor, strict=False)
        if self.higher_is_better:
            return [f / m if m else float("inf") for m, f in pairs if f]
        return [m / f for m, f in pairs if f]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, medians included."""
        ratios = self.ratios()
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "measured_runs": self.measured,
            "floor_runs": self.floor,
            "measured_median": median(self.measured),
            "floor_median": median(self.floor),
            "ratio_runs": ratios,
            "ratio": median(ratios) if ratios else None,
            "notes": self.notes,
            "extra": self.extra,
        }
