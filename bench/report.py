"""`bench/results/latest.json`, `latest.md` (a Markdown table) and `stages.png` (a bar chart)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.chart import bar_chart
from bench.config import RESULTS, ROOT, Settings, database_url
from bench.stats import Row, median

STAGE_COLOR, FLOOR_COLOR = (60, 110, 200), (150, 150, 150)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def meta(settings: Settings, started: datetime) -> dict[str, Any]:
    """When, where, with what: commit, CPUs, load, settings, the stack's env overrides."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "git_commit": commit,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "settings": settings.as_dict(),
        "target": _target(),
        "stack_env": settings.stack.overrides(),
    }


def _target() -> dict[str, str]:
    """Which stack was measured: state folder, gateway port, topic namespace, database."""
    keys = ("LOTLENS_STATE_DIR", "LOTLENS_GATEWAY_PORT", "KAFKA_GROUP_PREFIX", "LOTLENS_TOPIC_SUBMISSIONS")
    found = {key: os.environ[key] for key in keys if key in os.environ}
    found["database"] = database_url().rsplit("/", 1)[-1]
    return found


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], stages: dict[str, list[float]]) -> str:
    """The report as Markdown."""
    s = info["settings"]
    load = ", ".join(f"{x:.1f}" for x in info["load_average"])
    lines = [
        "# LotLens bench",
        "",
        f"{info['started_at']} - commit `{info['git_commit']}` - {info['cpus']} CPUs, load average "
        f"{load} at the end - {s['runs']} runs, {s['lots']} lots.",
        "",
        "Ratio = median over runs of (measured / floor) for times and sizes, (floor / measured) for rates:",
        "1.0 is as good as the floor, 5 is five times worse. Each run's floor is measured next to it.",
        "",
        "| scenario | metric | unit | measured (median) | floor (median) | ratio | notes |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['metric']} | {row['unit']} | {_fmt(row['measured_median'])} | "
            f"{_fmt(row['floor_median']) if row['floor_runs'] else '-'} | "
            f"{_fmt(row['ratio'])}{'x' if row['ratio'] is not None else ''} | {row['notes']} |"
        )
    if stages:
        lines += [
            "",
            "## Pipeline stages (seconds, per run)",
            "",
            "| stage | " + " | ".join(f"run {i + 1}" for i in range(s["runs"])) + " | median |",
            "|---|" + "---:|" * (s["runs"] + 1),
        ]
        for name, values in stages.items():
            lines.append(
                f"| {name} | " + " | ".join(_fmt(v) for v in values) + f" | {_fmt(median(values))} |"
            )
    for row in rows:
        parts = row["extra"].get("floor_parts_median_s")
        if parts:
            lines += [
                "",
                f"Floor parts of '{row['metric']}' (median s): "
                + ", ".join(f"{k} {_fmt(v)}" for k, v in parts.items()),
            ]
    lines += ["", "Stack measured: " + ", ".join(f"`{k}={v}`" for k, v in info["target"].items())]
    lines += ["", "Stack env overrides: " + ", ".join(f"`{k}={v}`" for k, v in info["stack_env"].items()), ""]
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], stages: dict[str, list[float]], lots: int) -> bytes:
    """Median stage times of the pipeline, then the floor's total, as horizontal bars."""
    bars = [(name, median(values), STAGE_COLOR) for name, values in stages.items()]
    floor = next((r["floor_median"] for r in rows if r["metric"].startswith("201 -> completed")), None)
    if floor is not None:
        bars.append(("floor: 4 hops + copy", floor, FLOOR_COLOR))
    return bar_chart(
        f"PIPELINE STAGES, {lots} LOTS (MEDIAN S)",
        bars,
        "s",
        "from event occurred_at; blue = lotlens stage, grey = bare kafka+copy floor",
    )


def write(
    rows: list[Row],
    settings: Settings,
    started: datetime,
    stages: dict[str, list[float]],
    folder: Path = RESULTS,
) -> Path:
    """Write the three files; the Markdown's path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [row.as_dict() for row in rows]
    info = meta(settings, started)
    (folder / "latest.json").write_bytes(
        orjson.dumps({"meta": info, "rows": data, "stages": stages}, option=orjson.OPT_INDENT_2)
    )
    (folder / "latest.md").write_text(markdown(data, info, stages))
    if stages:
        (folder / "stages.png").write_bytes(chart(data, stages, settings.lots))
    return folder / "latest.md"
