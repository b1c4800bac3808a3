"""One seeded chaos run: the stack up, the workload going, the faults applied one after another
(each followed by a recovery probe), then every invariant checked."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from chaos.invariants import check, wait_terminal
from chaos.lost_answers import resolve
from chaos.network import NoTraffic, Toxiproxy, toxiproxy_binary
from chaos.recovery import Recovery, consumer_groups, members, probe_seconds, recovery
from chaos.schedule import NETWORK_KINDS, Fault, faults, workload
from chaos.shutdown import Shutdown
from chaos.stack import ROOT, ChaosStack, FaultNotFired
from chaos.workload import Submitted, answer, drive
from lotlens_client import LotLensClient
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings
from tests.servers import WebhookReceiver, image_host, webhook_receiver

log = logging.getLogger("chaos")


@dataclass
class RunResult:
    """A seed's outcome: faults applied, recovery seconds per fault, violations."""

    seed: int
    faults: list[Fault] = field(default_factory=list)
    recovery_s: list[tuple[str, float | None]] = field(default_factory=list)  # (kind, s); None: never
    probe_s: list[tuple[str, float | None]] = field(default_factory=list)  # a fresh job's completion
    violations: list[str] = field(default_factory=list)
    # Faults that met nothing to disturb, (label, why): no defect, and no recovery measured either.
    not_fired: list[tuple[str, str]] = field(default_factory=list)
    shutdowns: list[Shutdown] = field(default_factory=list)  # each `sigterm`'s stop
    jobs: int = 0
    sync_ok: int = 0  # synchronous calls answered as asked
    seconds: float = 0.0


def apply(stack: ChaosStack, fault: Fault) -> Shutdown | None:
    """Inject one fault and clear it (restart, continue, broker or database back); recovery is
    measured from its return. A `sigterm` returns how its instance stopped."""
    shutdown = None
    if fault.kind == "kill9":
        stack.signal(fault.target, signal.SIGKILL)
        time.sleep(fault.hold_s)
        stack.start(fault.target)
    elif fault.kind == "sigstop":
        stack.signal(fault.target, signal.SIGSTOP)
        time.sleep(fault.hold_s * 3)  # a long pause: past a session timeout, the group moves on
        stack.signal(fault.target, signal.SIGCONT)
    elif fault.kind == "sigterm":
        # A rolling restart, or a scale-in followed by a scale-out: the instance drains and exits
        # by itself within its grace period, and a new one takes its place after the hold. A
        # static member does not leave its groups: a hold past the session timeout (10 s) hands
        # its partitions to the other instance, as a scale-in does, and the new one takes them back.
        shutdown = stack.terminate(fault.target)
        time.sleep(fault.hold_s * 3)
        stack.start(fault.target)
    elif fault.kind == "standin-restart":
        stack.signal("openai-standin", signal.SIGKILL)
        time.sleep(fault.hold_s)
        stack.start("openai-standin")
    elif fault.kind == "kafka-restart":
        stack.restart_kafka(fault.hold_s)
    elif fault.kind == "pg-restart":
        stack.infra("restart-pg")
    elif fault.kind in NETWORK_KINDS and stack.network is not None:
        # Placed where traffic flows: a toxic on a quiet link disturbs nothing. The seed still
        # decides the fault, its link and its hold; only its start waits for the link to be busy.
        waited = stack.network.await_traffic(fault.target)
        log.info("%s: %s", fault.label, "link quiet" if waited is None else f"traffic after {waited:.1f} s")
        # No traffic while the toxic was on: the fault tested nothing, and its recovery would pass.
        if not stack.network.hold(fault.target, fault.kind, fault.hold_s * 2):
            quiet = "" if waited is not None else f", nor in the {stack.network.traffic_wait_s:.0f} s before"
            raise NoTraffic(f"no traffic passed through its proxy while the toxic was on{quiet}")
    else:
        raise ValueError(f"unknown fault kind {fault.kind}")
    return shutdown


def inject(stack: ChaosStack, fault: Fault, result: RunResult) -> bool:
    """Apply one fault and note in the seed's result what came of it; False when it did not fire
    for want of anything to hit (a quiet link: listed as not fired, no violation, nothing to
    recover from). A process fault sent to a process that had exited by itself is a crash: a
    violation, and the restart after it is still measured."""
    try:
        shutdown = apply(stack, fault)
    except NoTraffic as exc:
        result.not_fired.append((fault.label, str(exc)))
        return False
    except FaultNotFired as exc:  # the target is started again by the seed's `revive`
        result.violations.append(str(exc))
        return True
    if shutdown is not None:
        log.info("seed %d: %s stopped in %.1f s, exit %s", result.seed, fault.target,
                 shutdown.seconds, shutdown.returncode)
        result.shutdowns.append(shutdown)
        result.violations += [v for v in [shutdown.violation()] if v]
    return True


def inject_poison(stack: ChaosStack) -> int:
    """One message no consumer can read, on the submissions topic; returns how many were sent."""
    producer = EventProducer(KafkaSettings(bootstrap_servers=stack.kafka_bootstrap), "chaos")
    producer.publish_raw(stack.topics.submissions, b"chaos-poison", b"{not an event", [])
    producer.flush()
    return 1


@dataclass(frozen=True)
class Plan:
    """What each seed of a run does: faults per seed, their kinds, the workload's size, the settle."""

    fault_count: int
    kinds: tuple[str, ...]
    jobs: int
    max_lots: int
    settle_s: float


def run_seeds(
    seeds: list[int],
    database_url: str,
    state: Path,
    plan: Plan,
    on_result: Callable[[RunResult], None] = lambda _: None,
) -> list[RunResult]:
    """Run the seeds one after another on one stack (started once, removed at the end); each seed
    has its own jobs and faults, and its invariants are checked before the next one starts."""
    schedules = {seed: faults(seed, plan.fault_count, plan.kinds) for seed in seeds}
    stack = ChaosStack(database_url, state / "stack")
    if any(f.kind in NETWORK_KINDS for chosen in schedules.values() for f in chosen):
        stack.network = Toxiproxy(toxiproxy_binary(ROOT), state / "toxiproxy.log")
    results: list[RunResult] = []
    current: RunResult | None = None
    with image_host() as images, webhook_receiver() as receiver:
        receiver.respond = answer
        try:
            stack.up()
            engine = stack.engine()
            client = stack.client()
            poison = 0
            for seed in seeds:
                current = RunResult(seed, faults=schedules[seed])
                started = time.monotonic()
                try:
                    poison += inject_poison(stack)
                    _one_seed(stack, engine, client, images, receiver, current, poison, plan)
                except Exception as exc:  # the seed fails with the reason; the next one still runs
                    log.exception("seed %d aborted", seed)
                    current.violations.append(f"seed aborted: {exc!r}")
                current.seconds = time.monotonic() - started
                results.append(current)
                on_result(current)
                current = None
            engine.dispose()
        except Exception as exc:  # a run that cannot go on fails its current seed, with the reason
            log.exception("chaos run aborted")
            if current is None and len(results) < len(seeds):
                current = RunResult(seeds[len(results)], faults=schedules[seeds[len(results)]])
            if current is not None:
                current.violations.append(f"run aborted: {exc!r}")
                results.append(current)
                on_result(current)
        finally:
            stack.down()
            try:
                if any(r.violations for r in results):  # kept for diagnosis, named in the log
                    log.warning("keeping schema and topics %s for diagnosis", stack.name)
                else:
                    stack.drop()
            except Exception as exc:  # cleanup after a broken broker or database is best effort
                log.warning("cleanup of %s: %s", stack.name, exc)
    return results


def _one_seed(
    stack: ChaosStack,
    engine: Engine,
    client: LotLensClient,
    images: str,
    receiver: WebhookReceiver,
    result: RunResult,
    poison: int,
    plan: Plan,
) -> None:
    """One seed's workload and faults on the running stack, then its invariants."""
    out, stop, probe = Submitted(), threading.Event(), stack.probe_client()
    measured: list[Recovery] = []
    plans = workload(result.seed, plan.jobs, plan.max_lots)
    driver = threading.Thread(target=drive, args=(client, plans, images, receiver.url, out, stop, 2.0))
    driver.start()
    try:
        out.first_answered.wait(120)
        for fault in result.faults:
            time.sleep(fault.calm_s)
            log.info("seed %d: %s on %s (hold %.1f s)", result.seed, fault.kind, fault.target, fault.hold_s)
            # A killed or stopped consumer instance must be back in its groups (its member ids before).
            groups = consumer_groups(stack.kafka_bootstrap, stack.name)
            restarted = fault.kind in ("kill9", "sigterm")
            before = members(stack.kafka_bootstrap, groups, fault.target) if restarted else {}
            if not inject(stack, fault, result):
                log.info("seed %d: %s did not fire: %s", result.seed, fault.label, result.not_fired[-1][1])
                continue
            rejoining = (fault.target, before) if before else None
            measured.append(recovery(probe, stack.kafka_bootstrap, groups, images, 180, rejoining))
            seconds = measured[-1].seconds
            log.info("seed %d: %s recovered in %s s", result.seed, fault.label,
                     None if seconds is None else round(seconds, 1))
            result.recovery_s.append((fault.label, seconds))
            result.violations += stack.revive()
    finally:
        driver.join()
    resolve(client, out)
    result.jobs, result.sync_ok = len(out.accepted), out.sync_ok
    # The probe jobs first: the invariants look at every batch at the stand-in, theirs included.
    wait_terminal(engine, [r.probe_job for r in measured if r.probe_job], plan.settle_s)
    result.violations += check(stack, engine, out, receiver, poison, plan.settle_s)
    fired = [label for label, _ in result.recovery_s]
    result.probe_s = list(zip(fired, probe_seconds(engine, measured), strict=True))
    result.violations += stack.revive()
    result.violations += [f"no recovery after {kind}" for kind, s in result.recovery_s if s is None]
    result.violations += [f"probe job not completed after {kind}" for kind, s in result.probe_s if s is None]
