"""Graceful stops, as Kubernetes gives them (rolling restarts, KEDA's scale-in): SIGTERM to each
service of a chaos stack, idle and while a workload runs; each must exit 0 by itself within its
pod's grace period, and every invariant of the chaos run must hold afterwards (that seeded run is
a soak test: `make chaos` runs it). And the recovery probe that measures every fault is not held
up by the workload's rate limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from chaos.recovery import consumer_groups, recovery
from chaos.run import Plan, run_seeds
from chaos.stack import CONSUMERS, ChaosStack
from lotlens_client import JobStatus, LotLensClient, RateLimitedError
from tests.conftest import Infra
from tests.polling import wait_for
from tests.servers import image_host, png, serve
from tests.stack_health import wait_healthy

pytestmark = pytest.mark.e2e

SERVICES = {"gateway", *CONSUMERS}


@pytest.fixture(scope="module")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    """A chaos stack (no proxies) for this module's tests."""
    running = ChaosStack(infra.database_url, tmp_path_factory.mktemp("graceful") / "stack")
    try:
        running.up()
        yield running
    finally:
        running.down()
        running.drop()


def test_every_service_stops_by_itself_within_its_grace_when_idle(stack: ChaosStack) -> None:
    for name in ["gateway", *(f"{consumer}-1" for consumer in CONSUMERS)]:
        shutdown = stack.terminate(name)
        print(f"{name}: stopped in {shutdown.seconds:.1f} s, exit {shutdown.returncode}")  # measured
        stack.start(name)
        assert shutdown.violation() is None
    wait_healthy(stack.url, stack.processes, stack.log_tail)  # restarted, for the next test
    assert stack.revive() == []


@dataclass
class SlowImages:
    """An image host: `asked` is set at its first request, each answered after `delay_s`."""

    url: str
    asked: threading.Event
    delay_s: float


@contextmanager
def slow_image_host(delay_s: float) -> Iterator[SlowImages]:
    """Serves a PNG for any path, each after the host's `delay_s` at the time it is asked."""
    image = png()
    host = SlowImages("", threading.Event(), delay_s)

    class Slow(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            host.asked.set()
            time.sleep(host.delay_s)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            if body:
                self.wfile.write(image)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def log_message(self, *_args: object) -> None:
            """Say nothing."""

    with serve(Slow) as url:
        host.url = url
        yield host


def test_a_vision_batcher_stopped_while_it_checks_a_slow_hosts_images_exits_within_its_grace(
        stack: ChaosStack) -> None:
    # vision-batcher-1 alone, checking 2 images at a time: the shard's 30 lots, 2 images each, 5 s
    # an image, take 150 s to prepare, past the 120 s grace (1,000 lots at 64 at a time do too).
    stack.terminate("vision-batcher-2")
    stack.terminate("vision-batcher-1")
    stack.start("vision-batcher-1", {"LOTLENS_IMAGE_CHECK_CONCURRENCY": "2"})
    try:
        with slow_image_host(5.0) as images:
            lots = [{"lot_id": f"slow-{i}", "additional_info": "2019 Toyota Camry, front collision",
                     "images": [{"url": f"{images.url}/slow-{i}-{n}.png"} for n in range(2)]}
                    for i in range(30)]
            client = stack.client()
            job_id = client.submit_job(lots, ["en"]).job_id
            assert images.asked.wait(120), "the vision-batcher never began to check the job's images"
            shutdown = stack.terminate("vision-batcher-1")
            print(f"vision-batcher-1: stopped in {shutdown.seconds:.1f} s, exit {shutdown.returncode}")
            # The old stop waited for the whole chunk's checks: killed at the grace's end.
            assert shutdown.violation() is None
            # Nothing lost: the shard it left `building` is sent again after the restart. Its
            # images are checked again, now at once: the stop was the slow host's part (its 5 s
            # an image made the rebuilt shard take 13 s more).
            images.delay_s = 0.0
            stack.start("vision-batcher-1")
            stack.start("vision-batcher-2")
            statuses: list[JobStatus] = []

            def ended() -> bool:
                statuses[:] = [client.job_status(job_id)]
                return statuses[0].is_terminal

            wait_for(ended, lambda: f"the job to end (it is {statuses[0].status})", timeout_s=300,
                     every_s=0.25)
            [status] = statuses
            assert status.status == "completed"
            assert (status.progress.processed_lots, status.progress.failed_lots) == (len(lots), 0)
    finally:
        for name in ("vision-batcher-1", "vision-batcher-2"):
            if stack.processes[name].poll() is not None:
                stack.start(name)


def test_the_recovery_probe_is_not_refused_by_the_workloads_rate_limit(stack: ChaosStack) -> None:
    # The workload's client spends its batch limit (10 jobs a minute), as a seed's jobs do (last
    # of the tests on this stack: the others submit with that client).
    workload = LotLensClient(stack.url, stack.client_key, timeout=60, max_retries=0)
    refused: RateLimitedError | None = None
    with image_host() as images:
        lots = [{"lot_id": f"limit-{i}", "additional_info": "x", "images": [{"url": f"{images}/l-{i}.png"}]}
                for i in range(2)]
        for _ in range(20):
            try:
                workload.submit_job(lots, ["en"])
            except RateLimitedError as exc:
                refused = exc
                break
        assert refused is not None and refused.retry_after is not None
        groups = consumer_groups(stack.kafka_bootstrap, stack.name)
        # The probe shared the workload's client: refused, it waited out the Retry-After inside
        # the measurement (a 2 s recovery was reported as 26 s).
        measured = recovery(stack.probe_client(), stack.kafka_bootstrap, groups, images,
                            timeout_s=refused.retry_after / 2)
    assert measured.seconds is not None, f"no recovery seen within {refused.retry_after / 2:.0f} s"


@pytest.mark.soak
def test_a_seeded_run_of_graceful_stops_of_every_service_breaks_no_invariant(
        infra: Infra, tmp_path: Path) -> None:
    """Soak: run by `make chaos`, not `make test` (95 s on a stack of its own, a third of the chaos
    tier). Its deterministic short siblings stay in `make test`: each of the five services stopped
    idle and the vision-batcher mid-check (above), the translator, webhook-dispatcher,
    vision-batcher and result-store stopped early in a job with the job completing and announced
    once (tests/e2e/test_batch_pipeline.py), the gateway's drain (tests/e2e/test_gateway_stop.py)."""
    # Seed 1's five faults are the deck's first round: SIGTERM to each of the five services, while
    # the seed's jobs, synchronous calls, cancellations and webhooks go on.
    plan = Plan(fault_count=5, kinds=("sigterm",), jobs=4, max_lots=300, settle_s=300)
    [result] = run_seeds([1], infra.database_url, tmp_path, plan)
    print(f"stops: {[(s.instance, round(s.seconds, 1), s.returncode) for s in result.shutdowns]}")
    assert {s.service for s in result.shutdowns} == SERVICES
    assert result.violations == [], (
        "rerun: make chaos CHAOS_ARGS='--seed 1 --seeds 1 --faults 5 --kinds sigterm --jobs 4 "
        "--max-lots 300'\n" + "\n".join(result.violations))
