"""`python -m bench [--full] [--lots N] [--runs N] ...`: run the scenarios, write bench/results/.

See bench/README.md. The stack is restarted with the bench's env (`scripts/stack.py down` + `up`)
unless `--no-restart`, and stopped at the end unless `--leave-up`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bench import images, jobs, namespace, polling, rebuild, report, stackctl, sync, webhooks
from bench.config import FULL, QUICK, RESULTS, Settings
from bench.context import Context
from bench.memory import MemoryWatch
from bench.procs import python_server
from bench.stats import Row

SCENARIOS = ("intake", "pipeline", "polling", "webhooks", "images", "memory", "sync", "rebuild")


def parse(argv: Sequence[str] | None) -> Settings:
    """Settings from the command line (`--full` picks the full preset, other flags override it)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--full", action="store_true", help="50,000 lots and bigger loads (< 30 min)")
    p.add_argument("--lots", type=int, help="lots per intake/pipeline run")
    p.add_argument("--runs", type=int, help="runs per scenario (medians are reported)")
    p.add_argument("--image-pool", type=int, help="distinct image URLs per measured job (0: all distinct)")
    p.add_argument("--distinct-lots", type=int, help="lots of the extra all-distinct-images job (0: skip)")
    p.add_argument("--warmup-lots", type=int, help="lots of an unmeasured job before the first run (0: none)")
    p.add_argument("--hooks", type=int, help="webhook URLs (deliveries) per webhook run")
    p.add_argument("--image-urls", type=int, help="URLs per image-check run")
    p.add_argument("--poll-seconds", type=float, help="seconds per polling load run")
    p.add_argument("--poll-requests", type=int, help="request budget per polling load run")
    p.add_argument("--poll-connections", type=int, help="connections of the polling load generator")
    p.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--window", type=float, help="LOTLENS_STAGE__WINDOW_S for the stack")
    p.add_argument("--poll-interval", type=float, help="LOTLENS_STAGE__POLL_INTERVAL_S for the stack")
    p.add_argument("--standin-phase", type=float, help="seconds of each stand-in batch phase")
    p.add_argument("--dispatchers", type=int, help="webhook-dispatcher instances in the stack (default 1)")
    p.add_argument(
        "--profile",
        help="comma-separated services to run under bench.sampler "
        "(writes bench/results/profile-<service>.txt)",
    )
    p.add_argument("--no-restart", action="store_true", help="use the running stack as it is")
    p.add_argument("--leave-up", action="store_true", help="keep the stack running afterwards")
    a = p.parse_args(argv)
    base = FULL if a.full else QUICK
    stack = dataclasses.replace(
        base.stack,
        **{
            k: v
            for k, v in (
                ("window_s", a.window),
                ("poll_interval_s", a.poll_interval),
                ("standin_phase_s", a.standin_phase),
                ("dispatchers", a.dispatchers),
            )
            if v is not None
        },
    )
    chosen = tuple(a.scenarios.split(",")) if a.scenarios else base.scenarios
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    overrides = {
        k: v
        for k, v in (
            ("lots", a.lots),
            ("image_pool", a.image_pool),
            ("distinct_lots", a.distinct_lots),
            ("warmup_lots", a.warmup_lots),
            ("runs", a.runs),
            ("hooks", a.hooks),
            ("image_urls", a.image_urls),
            ("poll_seconds", a.poll_seconds),
            ("poll_requests", a.poll_requests),
            ("poll_connections", a.poll_connections),
        )
        if v is not None
    }
    return dataclasses.replace(
        base,
        **overrides,
        scenarios=chosen,
        stack=stack,
        restart=not a.no_restart,
        leave_up=a.leave_up,
        profile=tuple(a.profile.split(",")) if a.profile else (),
    )


def _guarded(ctx: Context, name: str, rows: list[Row], step: Callable[[], list[Row]]) -> None:
    """Run one scenario; a failure becomes a report row instead of ending the bench."""
    ctx.log(f"scenario {name}")
    try:
        rows += step()
    except Exception as exc:
        traceback.print_exc()
        rows.append(Row(name, "FAILED", "-", [], [], notes=f"{type(exc).__name__}: {str(exc)[:300]}"))


def run(settings: Settings) -> tuple[list[Row], dict[str, list[float]]]:
    """Every chosen scenario against the running stack; the report rows and the stage timings."""
    rows: list[Row] = []
    stages: dict[str, list[float]] = {}
    wanted = set(settings.scenarios)
    with python_server("bench.servers") as server:
        ctx = Context(settings, stackctl.client_key(), images=server, receiver=server)

        def intake_and_pipeline() -> list[Row]:
            watch = MemoryWatch()
            found, timings = jobs.run(ctx, watch)
            stages.update(timings)
            return found + (watch.rows(settings.lots) if "memory" in wanted else [])

        steps: list[tuple[str, Callable[[], list[Row]]]] = []
        if wanted & {"intake", "pipeline", "memory"}:
            steps.append(("1-2 intake+pipeline", intake_and_pipeline))
        for name, step in (
            ("3 polling", polling.run),
            ("4 webhooks", webhooks.run),
            ("5 images", images.run),
            ("7 sync", sync.run),
            ("8 rebuild", rebuild.run),
        ):
            if name.split()[1] in wanted:
                steps.append((name, lambda step=step: step(ctx)))  # type: ignore[misc]
        for name, step_fn in steps:
            _guarded(ctx, name, rows, step_fn)
    return rows, stages


def main(argv: Sequence[str] | None = None) -> None:
    """Restart the stack with the bench's env, run, write the report, stop the stack."""
    settings = parse(argv)
    started = datetime.now(UTC)
    print(
        f"bench: starting its own stack (see bench/README.md) with {settings.stack.overrides()}"
        if settings.restart
        else "bench: using the running stack as it is",
        file=sys.stderr,
        flush=True,
    )
    name = ""
    try:
        if settings.restart:
            name = stackctl.restart(settings.stack)
            for service in settings.profile:
                stackctl.profile(service, RESULTS / f"profile-{service}.txt")
            if settings.profile and not stackctl.wait_until(stackctl.is_up, 90, 0.5):
                sys.exit("bench: the gateway is not healthy after swapping in the sampled services")
        elif not stackctl.is_up():
            sys.exit("bench: no healthy gateway; start the stack or drop --no-restart")
        rows, stages = run(settings)
    finally:
        if settings.restart and not settings.leave_up:
            stackctl.down()
            if name:
                namespace.cleanup(name)
    path = report.write(rows, settings, started, stages)
    print(path.read_text())
    print(f"bench: wrote {path.parent}/latest.json, latest.md, stages.png", file=sys.stderr)


if __name__ == "__main__":
    main()
