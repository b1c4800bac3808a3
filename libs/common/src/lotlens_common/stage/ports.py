"""What the runner needs from the outside: the work store, the batches API, an event publisher.

Adapters: `adapters/postgres.py` (work store), `model/openai_client.OpenAIBatches` and
`adapters/direct.py` (batches API), `adapters/kafka.py` (publisher); the unit tests' fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from lotlens_common.events import Event
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.core.lifecycle import for_oversized
from lotlens_common.stage.core.limits import default_token_limit
from lotlens_common.stage.core.queue_hold import HeldNow
from lotlens_common.stage.core.rule import WaitingJob
from lotlens_common.stage.figures import StageFigures
from lotlens_common.stage.work import LotWork, StageSpec, StageWork

W = TypeVar("W", bound=StageWork)
log = logging.getLogger(__name__)


class BatchesPort(Protocol):
    """Files and batches (OpenAI's Batch API, or direct mode's stand-in for it).

    Failures are raised as `lotlens_common.model.errors` errors: `ModelRequestError` carries the
    HTTP status (401/403/404 tell the runner it may not be able to see its batch).
    """

    # Whether a create that failed (a timeout, a 5xx) may still make its batch later than recovery's
    # next listing (`lifecycle.CREATE_LANDS_S`): OpenAI's may; direct mode's is made whole or not at all.
    creates_land_late: bool

    async def upload_batch_file(self, path: Path) -> str:
        """Upload a JSONL input file; its file id."""
        ...

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Create a batch over an uploaded file."""
        ...

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file."""
        ...

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch object as it is now."""
        ...

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        """Batches whose metadata contains all these pairs, newest first, from every page read."""
        ...

    async def find_batch(self, metadata_match: Mapping[str, str],
                         limit_pages: int = 50) -> dict[str, Any] | None:
        """The newest batch whose metadata contains all these pairs (None if none): no page is
        read after the one that shows it."""
        ...

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Ask OpenAI to cancel a batch."""
        ...

    def iter_file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        """Stream a file's lines."""
        ...


# Direct mode: a request body in, the response body out (e.g. `partial(call_responses, client)`).
DirectCall = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


# An event with the occurrence that caused it, from which its id is derived (`envelope.caused`):
# a shard prepared or collected again after a crash publishes its events under the same ids.
Caused = tuple[str, Event]


def about_lot(step: str, shard_id: str, lot_id: str, event: Event) -> Caused:
    """An event about one lot, from a step (prepare, collect) of the shard that holds it."""
    return f"{step} {shard_id} {lot_id}", event


class EventsRefused(Exception):
    """Kafka refuses these events for what they are, at every try, however well it takes others (one
    over the producer's size limit, an invalid record: a defect): the stage holds nothing back for
    them (`record.py`). Any other failure to publish may clear, and the caller tries again."""


class Publisher(Protocol):
    """Publishes the stage's events and returns once they are durable."""

    def publish(self, client_id: str, events: Sequence[Caused]) -> None:
        """Publish events of one client, in order; return when the broker has them (`EventsRefused`:
        it never will)."""
        ...


@dataclass(frozen=True)
class Shard:
    """A group of one job's lots sent (or being sent) as one OpenAI batch."""

    shard_id: str
    job_id: str
    client_id: str
    attempt: int
    status: str
    batch_id: str | None
    batch_status: str | None
    # Why its batch cannot be read, as the stage recorded it (None: readable, or never tried).
    unreadable: str | None = None
    # An operator's decision on it (`lifecycle.RESEND` or `FAIL`), not carried out yet.
    release: str | None = None
    # When its lots were claimed (a Unix time): its batch was created after.
    created_at: float = 0.0
    # How long ago a create was last asked for it (noted before the call, in both modes), whose batch
    # may exist (made, under way, a timeout, a 5xx, a crash), by the database's clock, which stamped it;
    # None: never asked, or failed making none. An age, not a time: compared with a pod's clock
    # running minutes ahead, the shard was built again while its first batch could still land.
    create_asked_age_s: float | None = None
    # When OpenAI created its batch (a Unix time), once on record: before `created_at` for a batch
    # the reconciler adopted into a shard made for it.
    batch_created_at: float | None = None


@dataclass(frozen=True)
class QuotaPause:
    """The stage's pause while OpenAI refuses its batches for the quota, as the refused shards'
    rows hold it (by the database's clock, which stamped them)."""

    reason: str  # OpenAI's answer to the latest refused create
    paused_s: float  # how long it has lasted
    retry_in_s: float  # until its next try (<= 0: due)


@dataclass
class Settlement:
    """A chunk of a shard's lot outcomes, applied in one transaction."""

    done: list[str]
    # reason -> lots that failed for good; the reason is kept on their rows (`jobs show` reads it)
    failed: dict[str, list[str]]
    cancelled: list[str]
    again: dict[str, list[str]]  # reason -> lots back to waiting
    rework: list[LotWork[Any]]  # lots going back with new work (e.g. more output room)
    unsent: dict[str, list[str]]  # reason -> lots back to waiting from a send OpenAI never ran

    @classmethod
    def empty(cls) -> Settlement:
        """Nothing settled yet."""
        return cls([], {}, [], {}, [], {})

    def retried(self) -> int:
        """How many lots go back to waiting."""
        return sum(map(len, self.again.values())) + sum(map(len, self.unsent.values()))

    def failures(self) -> int:
        """How many lots fail for good."""
        return sum(map(len, self.failed.values()))


@dataclass(frozen=True)
class Closing:
    """A shard closed `collected` with the last of its lot outcomes, and its batch's final status."""

    shard_id: str
    batch_status: str


# Given the lots a claim took (oldest first): how many of them to keep and their estimated tokens.
Fit = Callable[[list[LotWork[W]]], tuple[int, int]]


class WorkStore(Protocol[W]):
    """One stage's lots and shards (each method is one transaction)."""

    def waiting_jobs(self, cancelled_only: bool = False) -> list[WaitingJob]:
        """Jobs with waiting lots, with what the batching rule needs (only the cancelled ones')."""
        ...

    def tokens_enqueued(self) -> int:
        """Estimated tokens of the stage's batches that OpenAI still holds."""
        ...

    def claim(self, job_id: str, shard_id: str, limit: int, fit: Fit[W]) -> list[LotWork[W]]:
        """Take up to `limit` waiting lots into a new `building` shard; those `fit` keeps."""
        ...

    def claim_named(self, job_id: str, lot_ids: Sequence[str], shard_id: str,
                    tokens: Callable[[list[LotWork[W]]], int]) -> list[LotWork[W]]:
        """Take these lots, those still waiting, into a new shard (adopting a batch)."""
        ...

    def exclusive(self, key: str) -> AbstractContextManager[bool]:
        """Hold `key` while inside (False: another process holds it)."""
        ...

    def holds(self, key: str) -> bool:
        """Whether this process still holds `key` (a database restart can take a lock away)."""
        ...

    def shards(self, status: str) -> list[Shard]:
        """The stage's shards in a status, oldest first."""
        ...

    def shard(self, shard_id: str) -> Shard | None:
        """One shard, if it is on record."""
        ...

    def shard_lots(self, shard_id: str, sent: Mapping[str, LotWork[W]] | None = None) -> list[LotWork[W]]:
        """The lots a shard still holds; their work is taken from `sent` (the lots this process
        put in the shard's batch, by id) when it has every one of them."""
        ...

    def shard_trace(self, shard_id: str) -> dict[str, str]:
        """The W3C context one of the shard's lots keeps of its job's trace ({} if none)."""
        ...

    def save_prepared(self, job_id: str, settled: Sequence[str], changed: Sequence[LotWork[W]]) -> None:
        """Lots preparation settled without failing them are done; new work (e.g. image verdicts) is kept
        (the ones it failed go through `settle`, with their reasons)."""
        ...

    def requeue(self, job_id: str, lot_ids: Sequence[str], reason: str | None = None,
                sent: bool = True) -> None:
        """Lots back to waiting, freed from their shard; the send they come back from counts as
        an attempt when it was `sent` (OpenAI ran it)."""
        ...

    def note_create_asked(self, shard_id: str, asked: bool) -> None:
        """A create is being asked for the shard (`asked`), or it was refused (no batch made)."""
        ...

    def record_batch(self, shard_id: str, batch_id: str, lot_count: int, created_at: float | None,
                     tokens: int, batch_status: str | None = None) -> bool:
        """The `building` shard's batch is on record, with when OpenAI created it (a Unix time), its lots'
        estimated tokens (`tokens_enqueued` counts them) and status; False: no longer building, unchanged."""
        ...

    def note_batch_status(self, shard_id: str, batch_status: str) -> None:
        """Remember the batch's latest status (only while the shard is submitted)."""
        ...

    def note_unreadable(self, shard_id: str, reason: str | None) -> None:
        """Record why the shard's batch cannot be read (None: it can be again), for on-call."""
        ...

    def close_shard(self, shard_id: str, status: str, batch_status: str | None) -> None:
        """The shard needs no more attention (collected, or empty)."""
        ...

    def quota_pause(self) -> QuotaPause | None:
        """The stage's quota pause, if a `building` shard holds one."""
        ...

    def note_quota_refused(self, shard_id: str, reason: str, wait_s: float) -> None:
        """OpenAI refused the `building` shard's batch for the quota: the stage's pause (begun
        now, unless one holds) is held on its row until a try `wait_s` from now."""
        ...

    def take_quota_try(self, wait_s: float) -> datetime | None:
        """Take the due try of the stage's quota pause (its next one put `wait_s` from now); that
        time, if this call took it (one conditional statement: of instances asking at once, one)."""
        ...

    def give_back_quota_try(self, moved_to: datetime) -> None:
        """The try `take_quota_try` took (the next put at `moved_to`) asked no create (a batch found,
        a listing failed): the next try is due now, unless a refusal recorded since put its own wait."""
        ...

    def end_quota_pause(self) -> None:
        """A batch was created: no shard holds the stage's quota pause any longer."""
        ...

    def queue_held(self) -> HeldNow:
        """How long new batches are still held back as OpenAI's enqueued-token queue for the model
        refused one of any instance's lately (0: not), after how many in a row (`core/queue_hold.py`)."""
        ...

    def note_queue_refused(self, created_at: float) -> float | None:
        """A batch created at `created_at` (a Unix time) failed `token_limit_exceeded`: how long the
        stage's new batches are held back from now (None: it told nothing new)."""
        ...

    def note_queue_admitted(self, created_at: float) -> None:
        """A batch created at `created_at` got past validation (it may end the series of refusals)."""
        ...

    def settle(self, job_id: str, settlement: Settlement, closing: Closing | None = None) -> None:
        """Apply lot outcomes; with `closing`, the shard is closed `collected` in the same
        transaction (which settles its done lots: they are written only without it)."""
        ...

    def cancelled_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs were cancelled."""
        ...

    def known_batches(self, batch_ids: Sequence[str]) -> set[str]:
        """Those of the batch ids some shard has on record."""
        ...

    def job_known(self, job_id: str) -> bool:
        """Whether the stage has ever had lots of this job."""
        ...

    def figures(self) -> StageFigures:
        """The stage's figures for /metrics but the lots waiting, as its tables hold them now."""
        ...

    def lots_waiting(self) -> int:
        """For /metrics: lots not in a batch yet (waiting for a shard, or in a `building` one)."""
        ...

    def prune(self, settled_before: datetime) -> int:
        """Forget some finished jobs' rows; how many jobs."""
        ...


# The sent lots a stage keeps at most (~1.5 kB each): one full batch's (50,000 requests at most).
SENT_LOTS_KEPT = 50_000


# The `Stage.unreadable` entries of the stage-wide pauses (the others are shard ids): while OpenAI
# refuses our key (`key.py`), and while it refuses batches for the quota (`quota.py`).
KEY_REFUSED = "the key is refused"
QUOTA_EXHAUSTED = "the quota is exhausted"


@dataclass
class Stage(Generic[W]):
    """One stage's rules and ports, handed to every step."""

    spec: StageSpec[W]
    store: WorkStore[W]
    batches: BatchesPort
    publisher: Publisher
    settings: StageSettings
    # What pauses the stage, with why: shards whose batch cannot be read by id, until a listing tells
    # what became of it (nothing new is built meanwhile), a refused key (`key.py`), the quota
    # (`quota.py`: its rows are the record, this the process's view); what each lets through: `may_build`.
    unreadable: dict[str, str] = field(default_factory=dict)
    # The shard whose batch this process made and could not put on record (`record.py`'s hold).
    held_shard: str | None = None
    # Whether the pauses recorded on the shard rows are held (`unreadable.take_up_recorded_pauses`).
    recorded_pauses_taken_up: bool = False
    # Files are cut at this many bytes since OpenAI refused one as too large (at `shrunk_at`, Unix time).
    max_file_bytes: int | None = None
    shrunk_at: float = 0.0
    # The lots this process put in each of its shards' batches, as it prepared them, until it
    # collects the shard: reading and parsing every lot's work again at collection was about a
    # tenth of a stage's CPU. A shard sent before a restart, or by another instance, is read.
    sent: dict[str, dict[str, LotWork[W]]] = field(default_factory=dict)
    # Batches no shard explains that the reconciler left alone (an orphan whose lots are settled
    # elsewhere, or whose input file is gone; a duplicate it asked to cancel once), not downloaded or
    # cancelled again every minute; only its latest listing's (at most 1,000 ids) are kept.
    left_orphans: set[str] = field(default_factory=set)
    # Set on SIGTERM: a round stops between shards and a shard's chunks. One of a big job (50,000
    # lots' image checks, slow hosts) outlasted the pod's grace period, and SIGKILL cut it anywhere.
    stopping: threading.Event = field(default_factory=threading.Event)
    # Building shards whose create may still land -> when recovery last listed OpenAI's batches
    # for them (time.monotonic()): `lifecycle.LIST_WHILE_LANDING_S`.
    listed_while_landing: dict[str, float] = field(default_factory=dict)
    served_at: dict[str, float] = field(default_factory=dict)  # client -> its last claim (monotonic)

    def remember_sent(self, shard_id: str, lots: Sequence[LotWork[W]]) -> None:
        """Keep a shard's sent lots for its collection; the oldest shards' go past SENT_LOTS_KEPT
        (e.g. a shard whose lock went to recovery: another instance collects it)."""
        self.sent[shard_id] = {lot.lot_id: lot for lot in lots}
        kept = sum(len(shard) for shard in self.sent.values())
        while kept > SENT_LOTS_KEPT:
            kept -= len(self.sent.pop(next(iter(self.sent))))

    def shrink_files(self, refused_bytes: int, reason: str, built_at: float | None = None) -> None:
        """OpenAI refused a file of this size as too large (one built at `built_at`, a Unix time):
        cut the next ones smaller, unless they were cut since it was built (each batch in flight
        that failed so halved the limit again)."""
        if built_at is not None and built_at < self.shrunk_at:
            return
        self.max_file_bytes = min(self.file_byte_limit(), for_oversized(refused_bytes).max_bytes)
        self.shrunk_at = time.time()
        log.warning("OpenAI refused a %d-byte file (%s): files are cut at %d bytes from now on",
                    refused_bytes, reason, self.max_file_bytes)

    def token_limit(self) -> int:
        """The enqueued-token budget (0: none)."""
        configured = self.settings.enqueued_token_limit
        return default_token_limit(self.spec.model()) if configured is None else configured

    def file_byte_limit(self) -> int:
        """The byte limit of the next batch input file."""
        return min(self.settings.max_batch_bytes, self.max_file_bytes or self.settings.max_batch_bytes)
