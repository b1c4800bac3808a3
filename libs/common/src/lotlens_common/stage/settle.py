"""Applying a shard's lot outcomes chunk by chunk: events first, then the lots' new statuses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lotlens_common.faults import fault_point
from lotlens_common.model.errors import ModelOutputError, ModelUnavailableError
from lotlens_common.ops import heartbeat
from lotlens_common.stage import metrics
from lotlens_common.stage.core.outcomes import Kind, Outcome, after_error
from lotlens_common.stage.ports import Caused, Closing, Settlement, Shard, Stage, about_lot
from lotlens_common.stage.work import LotWork, PartDone

log = logging.getLogger(__name__)

# Outcomes applied at once. Each chunk waits for Kafka to acknowledge its events (acks=all)
# before its lots are marked: 1,000 made a 50,000-lot shard wait 50 times in a row. The last chunk
# takes the rest when less than another chunk is left (`flush_if_full`): at most 2 * CHUNK - 1.
CHUNK = 5000


class Settler:
    """Accumulates a shard's outcomes and applies them a chunk at a time."""

    def __init__(self, stage: Stage[Any], shard: Shard, cancelled: bool) -> None:
        self.stage, self.shard, self.cancelled = stage, shard, cancelled
        self.events: list[Caused] = []
        self.settlement = Settlement.empty()
        # The lots `settlement` holds, counted as each is added: summed over its lists after every
        # lot, a 50,000-lot shard's chunks cost about 1 us a lot.
        self.outcomes = 0

    def succeeded(self, lot: LotWork[Any], body: Mapping[str, Any]) -> None:
        """A response body arrived for the lot."""
        try:
            self.events.append(about_lot("collect", self.shard.shard_id, lot.lot_id,
                                         self.stage.spec.result_event(lot, body)))
            self.settlement.done.append(lot.lot_id)
            self.outcomes += 1
        except PartDone as part:
            # Not a failure: the rest of the lot's work goes in the next batch (none, its job
            # cancelled: then what the parts done used goes with its LotFailed).
            self.refused(part.lot, part.progress if self.cancelled else str(part))
        except (ModelUnavailableError, ModelOutputError) as exc:
            self.unusable(lot, body, exc)
        except Exception as exc:
            # Reading this one answer failed otherwise (a defect, an answer nested past Python's
            # recursion limit): raised from here, it ended the collection every round, and the
            # batch's other lots never settled. Sent again within the attempts, then failed.
            metrics.openai_error(self.stage.spec.name, "files", exc)
            log.exception("the answer for lot %s could not be read", lot.lot_id,
                          extra={"job_id": lot.job_id, "shard_id": self.shard.shard_id})
            self.failed(lot, Kind.TRANSIENT, f"the model's answer could not be read ({type(exc).__name__})")

    def unusable(self, lot: LotWork[Any], body: Mapping[str, Any],
                 exc: ModelUnavailableError | ModelOutputError) -> None:
        """A response body arrived for the lot that cannot be used: a failed Response, or an answer
        that is not what was asked."""
        if not isinstance(exc, ModelOutputError):
            # The response failed for a passing reason (`server_error`, `rate_limit_exceeded`):
            # raised from the collection, it failed it whole every round.
            self.failed(lot, Kind.TRANSIENT, str(exc))
            return
        # The model answered but the answer is unusable: sent again only when the stage
        # knows what to change (e.g. more output room); the same request would end the same.
        # Billed all the same: its usage goes with the lot, into its next answer's event or
        # its LotFailed (dropped here, a failed lot's job reported less than OpenAI billed).
        lot = self.stage.spec.with_paid(lot, body)
        changed = self.stage.spec.retry_unusable(lot, exc)
        if changed is None:
            self._apply(lot, Outcome("failed", str(exc)))
            return
        outcome = after_error(Kind.TRANSIENT, str(exc), lot.attempts,
                              self.stage.settings.max_attempts, self.cancelled)
        # Failed or cancelled, the lot ends with what this answer had right (`changed` holds the
        # languages a wrong-language answer got right): from `lot`, its LotFailed dropped them.
        self._apply(changed, outcome)
        if outcome.verdict == "retry":
            self.settlement.rework.append(changed)

    def refused(self, changed: LotWork[Any], reason: str) -> None:
        """OpenAI refused the lot's request for a part of it it names (an image), or answered a
        part of its work (`PartDone`): the lot goes again without it. No attempt is used, as each
        leaves one part fewer."""
        if self.cancelled:
            self.cancel(changed, reason)
            return
        self.settlement.rework.append(changed)
        self._apply(changed, Outcome("retry", reason, counted=False))

    def cancel(self, lot: LotWork[Any], reason: str) -> None:
        """The lot's job was cancelled: dropped, with a LotFailed carrying what its answers so far
        were billed (`reason`: how far it got)."""
        self._apply(lot, Outcome("cancelled", reason))

    def failed(self, lot: LotWork[Any], kind: Kind, reason: str) -> None:
        """The lot got no usable answer."""
        self._apply(lot, after_error(kind, reason, lot.attempts, self.stage.settings.max_attempts,
                                     self.cancelled))

    def _apply(self, lot: LotWork[Any], outcome: Outcome) -> None:
        reason = outcome.reason or ""
        if outcome.verdict == "failed":
            self.events.append(about_lot("collect", self.shard.shard_id, lot.lot_id,
                                         self.stage.spec.failure_event(lot, reason)))
            self.settlement.failed.setdefault(reason, []).append(lot.lot_id)
        elif outcome.verdict == "cancelled":
            if lot.work.earlier_usage is not None:
                # Answers billed that the lot cannot finish with now (a part of its languages, one
                # it could not use): dropped with no event, its job's usage left them out. A paid
                # result fails a cancelled lot, as one OpenAI returns after the cancel does.
                failed = self.stage.spec.failure_event(lot, f"the job was cancelled ({reason})")
                self.events.append(about_lot("collect", self.shard.shard_id, lot.lot_id, failed))
            self.settlement.cancelled.append(lot.lot_id)
        elif outcome.verdict == "retry":
            again = self.settlement.again if outcome.counted else self.settlement.unsent
            again.setdefault(reason, []).append(lot.lot_id)
        else:
            self.settlement.done.append(lot.lot_id)
        self.outcomes += 1  # each verdict above holds the lot in one of the settlement's lists

    def flush_if_full(self, to_come: int | None = None) -> None:
        """Apply what has accumulated once a chunk is full; with `to_come` (the lots of the shard
        still to be settled), not while they and this chunk make less than two: the close then
        settles them all with the shard.

        A chunk applied before the close marks each of its lots `done` (`WorkStore.settle`): a
        9,000-lot shard wrote 5,000 rows, about 3 us of PostgreSQL each, only for its close to
        settle the 4,000 others; in the bench's 50,000-lot jobs (shards of 4,000 to 23,000 lots)
        two thirds of a stage's lots were written so.
        """
        if self.outcomes >= CHUNK and (to_come is None or self.outcomes + to_come >= 2 * CHUNK):
            self.flush()

    def flush(self, batch_status: str | None = None) -> None:
        """Publish the events, then record the lots' new statuses; with `batch_status`, the last
        chunk: the shard is closed `collected` with it."""
        name = self.stage.spec.name
        self.stage.publisher.publish(self.shard.client_id, self.events)
        fault_point(f"{name}.after_results_published")
        closing = Closing(self.shard.shard_id, batch_status) if batch_status is not None else None
        self.stage.store.settle(self.shard.job_id, self.settlement, closing)
        done = self.settlement
        metrics.LOT_RESULTS.labels(stage=name, outcome="done").inc(len(done.done))
        metrics.LOT_RESULTS.labels(stage=name, outcome="failed").inc(done.failures())
        metrics.LOT_RESULTS.labels(stage=name, outcome="retried").inc(done.retried())
        self.events, self.settlement, self.outcomes = [], Settlement.empty(), 0
        heartbeat(f"stage:{name}")  # a big collection is a long round: the probe sees it go on
