"""One seeded chaos run: the stack up, the workload going, the faults applied one after another
(each followed by a recovery probe), then every invariant checked."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos.invariants import check
from chaos.schedule import Fault, faults, workload
from chaos.stack import ChaosStack
from chaos.workload import Submitted, answer, drive
from lotlens_client import LotLensClient, LotLensError
from lotlens_common.kafka import EventProducer
from lotlens_common.settings import KafkaSettings
from tests.servers import image_host, webhook_receiver

log = logging.getLogger("chaos")


@dataclass
class RunResult:
    """A seed's outcome: faults applied, recovery seconds per fault, violations."""

    seed: int
    faults: list[Fault] = field(default_factory=list)
    recovery_s: list[tuple[str, float | None]] = field(default_factory=list)  # (kind, s); None: never
    violations: list[str] = field(default_factory=list)
    jobs: int = 0
    seconds: float = 0.0


def apply(stack: ChaosStack, fault: Fault) -> None:
    """Inject one fault and clear it (restart, continue, broker or database back)."""
    if fault.kind == "kill9":
        stack.signal(fault.target, signal.SIGKILL)
        time.sleep(fault.hold_s)
        stack.start(fault.target)
    elif fault.kind == "sigstop":
        stack.signal(fault.target, signal.SIGSTOP)
        time.sleep(fault.hold_s * 3)  # a long pause: past a session timeout, the group moves on
        stack.signal(fault.target, signal.SIGCONT)
    elif fault.kind == "standin-restart":
        stack.signal("openai-standin", signal.SIGKILL)
        time.sleep(fault.hold_s)
        stack.start("openai-standin")
    elif fault.kind == "kafka-restart":
        stack.infra("restart-kafka")
    elif fault.kind == "pg-restart":
        stack.infra("restart-pg")
    else:
        raise ValueError(f"unknown fault kind {fault.kind}")


def recovery(client: LotLensClient, images: str, timeout_s: float) -> float | None:
    """Seconds from now until a fresh 2-lot job is completed (the pipeline is current again)."""
    started = time.monotonic()
    lots = [
        {
            "lot_id": f"probe-{started}-{i}",
            "additional_info": "probe",
            "images": [{"url": f"{images}/probe-{started}-{i}.png"}],
        }
        for i in range(2)
    ]
    job_id = None
    while time.monotonic() - started < timeout_s:
        try:
            job_id = job_id or client.submit_job(lots, ["en"]).job_id
            if client.job_status(job_id).status == "completed":
                return time.monotonic() - started
        except LotLensError:
            pass
        time.sleep(0.5)
    return None


def inject_poison(stack: ChaosStack) -> int:
    """One message no consumer can read, on the submissions topic; returns how many were sent."""
    producer = EventProducer(KafkaSettings(bootstrap_servers=stack.kafka_bootstrap), "chaos")
    producer.publish_raw(stack.topics.submissions, b"chaos-poison", b"{not an event", [])
    producer.flush()
    return 1


def run_seed(
    seed: int,
    kafka: str,
    database_url: str,
    state: Path,
    fault_count: int,
    kinds: tuple[str, ...],
    jobs: int,
    max_lots: int,
    settle_s: float,
) -> RunResult:
    """Run one seed end to end; the stack is removed afterwards whatever happened."""
    result = RunResult(seed, faults=faults(seed, fault_count, kinds))
    started = time.monotonic()
    stack = ChaosStack(kafka, database_url, state / f"seed-{seed}")
    with image_host() as images, webhook_receiver() as receiver:
        receiver.respond = answer
        try:
            stack.up()
            engine = stack.engine()
            client = LotLensClient(stack.url, stack.client_key, timeout=60, max_retries=2)
            poison = inject_poison(stack)
            out, stop = Submitted(), threading.Event()
            plans = workload(seed, jobs, max_lots)
            driver = threading.Thread(
                target=drive, args=(client, plans, images, receiver.url, out, stop, 2.0)
            )
            driver.start()
            for fault in result.faults:
                time.sleep(fault.calm_s)
                log.info("seed %d: %s on %s (hold %.1f s)", seed, fault.kind, fault.target, fault.hold_s)
                apply(stack, fault)
                result.recovery_s.append((fault.label, recovery(client, images, 180)))
                result.violations += stack.exited()
            driver.join()
            result.jobs = len(out.accepted)
            result.violations += check(stack, engine, out, receiver, poison, settle_s)
            result.violations += stack.exited()
            result.violations += [f"no recovery after {kind}" for kind, s in result.recovery_s if s is None]
            engine.dispose()
        except Exception as exc:  # a run that cannot finish is a failing seed, with the reason
            log.exception("seed %d failed", seed)
            result.violations.append(f"run aborted: {exc!r}")
        finally:
            stack.down()
            try:
                if result.violations:  # kept for diagnosis: schema and topics named in the log
                    log.warning("seed %d keeps schema and topics %s for diagnosis", seed, stack.name)
                else:
                    stack.drop()
            except Exception as exc:  # cleanup after a broken broker or database is best effort
                log.warning("cleanup of seed %d: %s", seed, exc)
    result.seconds = time.monotonic() - started
    return result
