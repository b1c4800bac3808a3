"""`make chaos` / `python -m chaos`: seeded fault schedules against the whole stack.

One isolated stack serves the whole run (started once, removed at the end); each seed drives its
own mixed workload on fresh jobs, injects its faults and checks the invariants on its jobs before
the next seed starts. A table (faults by kind, violations, recovery p50/p99 per kind)
is printed and written to chaos/results/. A failing seed is printed with the command rerunning it.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from chaos.run import Plan, RunResult, run_seeds
from chaos.schedule import ALL_KINDS, DEFAULT_FAULTS_PER_SEED
from chaos.shutdown import table as shutdown_table
from chaos.stack import ROOT

RESULTS = ROOT / "chaos" / "results"


def kinds(only: str | None) -> tuple[str, ...]:
    """The fault kinds of this run (default: every kind)."""
    chosen = tuple(only.split(",")) if only else ALL_KINDS
    unknown = set(chosen) - set(ALL_KINDS)
    if unknown:
        raise SystemExit(f"unknown fault kinds: {sorted(unknown)}")
    return chosen


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _quantiles(values: list[float]) -> str:
    """`p50 | p99` of a list, `- | -` when empty."""
    if not values:
        return "- | -"
    return f"{statistics.median(values):.1f} | {percentile(values, 99):.1f}"


def table(results: list[RunResult]) -> str:
    """Faults by kind (injected, not fired) with their recovery and probe-job p50/p99, then one
    line per seed."""
    recovered: dict[str, list[float | None]] = defaultdict(list)
    probed: dict[str, list[float | None]] = defaultdict(list)
    missed: Counter[str] = Counter(label for result in results for label, _ in result.not_fired)
    for result in results:
        for kind, seconds in result.recovery_s:
            recovered[kind].append(seconds)
        for kind, seconds in result.probe_s:
            probed[kind].append(seconds)
    lines = [
        "| fault | injected | not fired | not recovered | recovery p50 (s) | recovery p99 (s) "
        "| probe job p50 (s) | probe job p99 (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in sorted(recovered.keys() | missed.keys()):
        injected, done = recovered[kind], [s for s in recovered[kind] if s is not None]
        lines.append(f"| {kind} | {len(injected)} | {missed[kind]} | {len(injected) - len(done)} | "
                     f"{_quantiles(done)} | {_quantiles([s for s in probed[kind] if s is not None])} |")
    stops = shutdown_table([s for result in results for s in result.shutdowns])
    lines += ["", *stops] if stops else []
    lines += ["", "| seed | faults | jobs | sync ok | violations | seconds |", "|---|---|---|---|---|---|"]
    for result in results:
        lines.append(
            f"| {result.seed} | {', '.join(f.label for f in result.faults)} | {result.jobs} | "
            f"{result.sync_ok} | {len(result.violations)} | {result.seconds:.0f} |"
        )
    total = sum(len(r.violations) for r in results)
    lines += ["", f"{len(results)} seeds, {sum(len(r.faults) for r in results)} faults "
                  f"({sum(missed.values())} not fired), {total} violations"]
    return "\n".join(lines)


def not_fired(results: list[RunResult]) -> str:
    """The faults that met nothing to disturb, each with why: listed, neither passed nor violations."""
    return "\n".join(f"- seed {r.seed}: {label} not fired: {why}"
                     for r in results for label, why in r.not_fired)


def proved_nothing(results: list[RunResult]) -> bool:
    """Whether no fault of the run fired: a run that disturbed nothing proves nothing, and fails."""
    return any(r.faults for r in results) and not any(r.recovery_s for r in results)


def arguments() -> argparse.ArgumentParser:
    """The command line, with `make chaos`'s defaults."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--seeds", type=int, default=20, help="how many consecutive seeds")
    parser.add_argument("--faults", type=int, default=DEFAULT_FAULTS_PER_SEED, help="faults per seed")
    parser.add_argument("--kinds", help="comma-separated fault kinds (default: every kind)")
    parser.add_argument("--jobs", type=int, default=6, help="batch jobs per seed")
    parser.add_argument("--max-lots", type=int, default=5000, help="the largest job (on every 10th seed)")
    parser.add_argument("--settle", type=float, default=600, help="seconds the jobs get to finish")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the seeds; exit 1 when any invariant was violated."""
    args = arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    chosen = kinds(args.kinds)
    database = os.environ.get("DATABASE_URL", "postgresql+psycopg2://lotlens:lotlens@127.0.0.1:55432/lotlens")
    state = Path(os.environ.get("LOTLENS_STATE_DIR", ROOT / ".state")) / "chaos"
    results: list[RunResult] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-seeds{args.seed}-{args.seed + args.seeds - 1}.md"
    plan = Plan(args.faults, chosen, args.jobs, args.max_lots, args.settle)

    def report(result: RunResult) -> None:
        results.append(result)
        for violation in result.violations:
            print(f"seed {result.seed}: VIOLATION {violation}", file=sys.stderr)
        if result.violations:
            print(
                f"rerun: make chaos CHAOS_ARGS='--seed {result.seed} --seeds 1 --faults {args.faults} "
                f"--jobs {args.jobs} --max-lots {args.max_lots}"
                + (f" --kinds {args.kinds}'" if args.kinds else "'"),
                file=sys.stderr,
            )
        # Written after every seed: an interrupted run still leaves the seeds it finished.
        violations = "\n".join(f"- seed {r.seed}: {v}" for r in results for v in r.violations)
        listed = not_fired(results)
        missed = f"\n\nNot fired (nothing to disturb; no violation):\n{listed}" if listed else ""
        out.write_text(
            f"# make chaos {time.strftime('%Y-%m-%d %H:%M')} (kinds: {', '.join(chosen)})\n\n"
            f"{table(results)}\n\n{violations}{missed}\n"
        )

    run_seeds(list(range(args.seed, args.seed + args.seeds)), database, state, plan, report)
    print(table(results))
    if not_fired(results):
        print(not_fired(results))
    if proved_nothing(results):
        print("no fault fired: the run disturbed nothing and proved nothing", file=sys.stderr)
    return 1 if any(r.violations for r in results) or proved_nothing(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
