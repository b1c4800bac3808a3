"""The chaos workload: batch jobs, synchronous calls and cancellations against the gateway, and a
webhook receiver that answers 200, 500, 410, slowly or not at all, as its URL asks."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from chaos.lost_answers import LostSubmission, answer_lost
from chaos.schedule import JobPlan
from chaos.sync_answers import SyncRequest, wrong_answer
from lotlens_client import LotLensClient, LotLensError, LotResult
from tests.servers import ReceivedWebhook

SLOW_S, SILENT_S = 1.5, 5.0


def answer(hook: ReceivedWebhook) -> int:
    """The receiver's answer, by the mode in the URL path (`/<mode>/<job tag>`)."""
    mode = hook.path.split("/")[1]
    if mode == "slow":
        time.sleep(SLOW_S)
    if mode == "silent":
        time.sleep(SILENT_S)  # longer than the dispatcher's timeout
    if mode == "flaky" and int(hook.headers.get("x-delivery-attempt", "1")) == 1:
        return 500
    return {"gone": 410}.get(mode, 200)


@dataclass
class Submitted:
    """What the workload sent and what it was told."""

    accepted: dict[str, tuple[JobPlan, list[str]]] = field(default_factory=dict)  # job id -> plan, lots
    refused: list[list[str]] = field(default_factory=list)  # lot ids of requests refused (4xx)
    cancelled: set[str] = field(default_factory=set)
    # Answers a fault lost: asked again once the faults are over (`lost_answers.resolve`).
    lost_submissions: list[LostSubmission] = field(default_factory=list)
    lost_cancels: set[str] = field(default_factory=set)
    sync_ok: int = 0  # answered 200 as asked (a described lot, or one failed for a documented reason)
    sync_retryable: int = 0  # errors the contract tells the client to retry (a fault's, allowed)
    sync_wrong: list[str] = field(default_factory=list)  # every other answer: a violation each
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set once the first (largest) job got its answer: the faults wait for it, so a gateway fault
    # at the start of a seed does not refuse the seed's large job every time.
    first_answered: threading.Event = field(default_factory=threading.Event)


def lots_for(plan: JobPlan, images: str, receiver: str) -> tuple[str, list[dict[str, Any]]]:
    """A job's lots: unique ids, two images each, the plan's webhook mode on every lot."""
    tag = uuid.uuid4().hex[:10]
    hook = f"{receiver}/{plan.webhook}/{tag}"
    return tag, [
        {
            "lot_id": f"{tag}-{i}",
            "additional_info": f"Car {i}, dent",
            "images": [{"url": f"{images}/{tag}-{i}-a.png"}, {"url": f"{images}/{tag}-{i}-b.png"}],
            "webhook": hook,
        }
        for i in range(plan.lots)
    ]


def submit(client: LotLensClient, plan: JobPlan, images: str, receiver: str, out: Submitted) -> None:
    """Submit one job (cancel it when the plan says so), recording the answer."""
    _tag, lots = lots_for(plan, images, receiver)
    ids = [lot["lot_id"] for lot in lots]
    try:
        accepted = client.submit_job(lots, plan.languages)
    except LotLensError as exc:
        with out.lock:
            if answer_lost(exc):  # the job may exist all the same
                out.lost_submissions.append(LostSubmission(plan, lots, exc.idempotency_key))
            else:
                out.refused.append(ids)
        return
    with out.lock:
        out.accepted[accepted.job_id] = (plan, ids)
    if plan.cancel:
        try:
            client.cancel_job(accepted.job_id)
            with out.lock:
                out.cancelled.add(accepted.job_id)
        except LotLensError as exc:  # already finished (400): the job ran to its end
            if answer_lost(exc):  # the cancel may have taken all the same
                with out.lock:
                    out.lost_cancels.add(accepted.job_id)


def sync_call(client: LotLensClient, images: str, out: Submitted) -> None:
    """One synchronous description: a fault may make it a retryable error, never a wrong answer."""
    tag = uuid.uuid4().hex[:10]
    asked = SyncRequest(tag, ("en", "de"), (f"{images}/{tag}.png",))
    lot = {"lot_id": tag, "additional_info": "Sync car, scratch", "images": [{"url": asked.image_urls[0]}]}
    answer: LotResult | LotLensError
    try:
        answer = client.describe_lot(lot, list(asked.languages))
    except LotLensError as exc:
        answer = exc
    wrong = wrong_answer(asked, answer)
    with out.lock:
        if wrong is not None:
            out.sync_wrong.append(wrong)
        elif isinstance(answer, LotLensError):
            out.sync_retryable += 1
        else:
            out.sync_ok += 1


def drive(
    client: LotLensClient,
    plans: list[JobPlan],
    images: str,
    receiver: str,
    out: Submitted,
    stop: threading.Event,
    spacing_s: float,
) -> None:
    """Submit the plans one after another while faults happen, a sync call between jobs."""
    for n, plan in enumerate(plans):
        if stop.is_set():
            return
        submit(client, plan, images, receiver, out)
        out.first_answered.set()
        if n % 2 == 0:
            sync_call(client, images, out)
        stop.wait(spacing_s)
