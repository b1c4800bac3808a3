"""What a lot carries through a stage: its typed, versioned work, and the stage's interface.

The work is stored as JSON in `stage_lots.work`; `v` names the shape, so a row written by an
older release is still read (add an upcaster beside the model when the shape changes).

The previous release refuses unknown fields, and a row it cannot read failed its whole round (no
batch sent or collected by that pod). A new field it can do without is written apart, in
`stage_lots.work_ahead` (`WRITTEN_APART`), which that release never reads: it sends the lot as it
always did. What a later release writes there is safe to ignore by definition, and this one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lotlens_common.events import Event
from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.usage import Usage, summed


class StageWork(BaseModel):
    """What every stage's work carries: the W3C context of its job's trace (empty when tracing is
    off), so the event a batch publishes for the lot, later and in another loop, continues it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trace: dict[str, str] = {}
    # What the lot's answers at this stage used so far that no event reported yet (the parts of
    # its languages translated, answers it could not use): billed all the same, so the lot's
    # result or its LotFailed carries it. Written only when set, so the rows of every other lot
    # read as before to a release that does not know the field (work forbids unknown fields).
    earlier_usage: Usage | None = Field(default=None, exclude_if=lambda usage: usage is None)
    # Fields the previous release does not know, written apart (each also written only when set).
    WRITTEN_APART: ClassVar[frozenset[str]] = frozenset()


class VisionWork(StageWork):
    """A lot waiting for its English description: notes, images, the languages asked for."""

    v: Literal[1] = 1
    additional_info: str = ""
    image_urls: tuple[str, ...]
    languages: tuple[str, ...]
    # Filled by the image check before the request is built.
    missing_images: tuple[str, ...] = ()
    # Images OpenAI refused (could not fetch or read), left out of the lot's next requests. Written
    # only when there are some, so the rows of every other lot read as before to a release that
    # does not know the field (work forbids unknown fields).
    refused_images: tuple[str, ...] = Field(default=(), exclude_if=lambda refused: not refused)
    # How many times the configured output budget the next request gets (more after an answer cut
    # off at it: `model.vision.vision_retry_room`). Written only when raised, and apart: a pod of
    # the previous release sends the lot with its own room (and fails it if cut off again).
    output_room: int = Field(default=1, exclude_if=lambda room: room == 1)
    # Images left out in turn after refusals naming none (`model.vision.next_suspect`), the last
    # one out of the next request. Written only when set, and apart: a pod of the previous release
    # sends the lot whole (and fails it if refused again).
    suspects: tuple[str, ...] = Field(default=(), exclude_if=lambda suspects: not suspects)
    # How many refused images the work held when the suspects were chosen. A refusal naming an
    # image clears the suspects (it explains the refusal), but a pod of the previous release
    # records one in `work` alone and leaves the suspects apart as they were: the suspect stayed
    # out beside the refused image and was listed missing, though nothing showed it was bad.
    # Suspects chosen before the refused images last grew are not honoured (`_stale_suspects`).
    refused_before_suspects: int = Field(default=0, exclude_if=lambda count: count == 0)
    WRITTEN_APART = frozenset({"output_room", "suspects", "refused_before_suspects"})

    @model_validator(mode="after")
    def _stale_suspects(self) -> Self:
        """A row's suspects dropped when an image was refused after they were chosen.

        After validation, on the fields: a validator before it had pydantic build each row's work
        as a dict first, 2.9 us a claimed lot where it reads the JSON in 2.1."""
        if self.suspects and len(self.refused_images) != self.refused_before_suspects:
            # Frozen: no setattr. In place, as pydantic wants an after-validator's result to be
            # `self`: an instance validated again would change too, and only `read_work` validates.
            self.__dict__.update(suspects=(), refused_before_suspects=0)
        return self


def arriving_vision_work(additional_info: str, image_urls: tuple[str, ...], languages: tuple[str, ...],
                         trace: dict[str, str]) -> bytes:
    """The JSON of a just-arrived lot's `VisionWork`, byte for byte as `model_dump_json` writes it.

    Written by orjson from values a decoded LotSubmitted has already validated: building the model
    and dumping it took 6-13 us a lot against 0.5, on the thread every arrival waits for
    (`tests/unit/stage/test_arriving_work.py` holds it to the model's own JSON).
    """
    return orjson.dumps({"trace": trace, "v": 1, "additional_info": additional_info,
                         "image_urls": image_urls, "languages": languages, "missing_images": ()})


class TranslationWork(StageWork):
    """A described lot waiting for its translations."""

    v: Literal[1] = 1
    english_html: str = ""
    languages: tuple[str, ...] = ()
    processed_images: int = 0
    missing_images: tuple[str, ...] = ()
    # How many times the base output budget the next request gets (doubled after `incomplete`).
    output_room: int = 1
    # A text too long for every language in one answer is translated a part of the languages at a
    # time (`model.translation.language_parts`): the languages done so far (what their answers
    # used is `earlier_usage`), and the most languages a request may hold (halved after one was
    # cut off at the model's largest output). Written only when set, so the rows of every other
    # lot read as before to a release that does not know the fields (work forbids unknown fields).
    translated: dict[str, str] = Field(default_factory=dict, exclude_if=lambda done: not done)
    most_per_request: int | None = Field(default=None, exclude_if=lambda most: most is None)
    # The languages the request in flight asks for, when fewer than those left: kept at submit and
    # read back at collect, since the settings that decide a part (the model, its output ceiling)
    # may change in between. Empty: it asked for every language left (so a row of a lot translated
    # in one answer reads as before to a release that does not know the field).
    sent_part: tuple[str, ...] = Field(default=(), exclude_if=lambda part: not part)


def arriving_translation_work(english_html: str, languages: tuple[str, ...], processed_images: int,
                              missing_images: tuple[str, ...], trace: dict[str, str]) -> bytes:
    """The JSON of a just-described lot's `TranslationWork`, byte for byte as `model_dump_json`
    writes it (as `arriving_vision_work`): from a decoded VisionCompleted's values, 0.9 us a lot
    against 12 for the model built and dumped (`tests/unit/stage/test_arriving_work.py`)."""
    return orjson.dumps({"trace": trace, "v": 1, "english_html": english_html, "languages": languages,
                         "processed_images": processed_images, "missing_images": missing_images,
                         "output_room": 1})


W = TypeVar("W", bound=StageWork)


def stored_work(work: StageWork) -> tuple[StageWork | dict[str, Any], dict[str, Any] | None]:
    """The work as `stage_lots.work` and `work_ahead` hold it (None: nothing written apart)."""
    apart = work.model_dump(mode="json", include=set(work.WRITTEN_APART)) if work.WRITTEN_APART else {}
    if not apart:
        return work, None
    return work.model_dump(mode="json", exclude=set(apart)), apart


def read_work(work_type: type[W], work: str, ahead: str | None) -> W:
    """The work of a row, from its two columns' JSON text."""
    if ahead is None:
        # The validator without `model_validate_json`'s wrapper (0.4 us of 2.5 a claimed lot).
        return work_type.__pydantic_validator__.validate_json(work)  # type: ignore[no-any-return]
    # Only the fields this release knows: the others are a later release's, written apart because
    # a release without them does without.
    known = {name: value for name, value in orjson.loads(ahead).items() if name in work_type.model_fields}
    return work_type.model_validate({**orjson.loads(work), **known})


@dataclass(frozen=True)
class LotWork(Generic[W]):
    """A lot waiting in (or claimed by) a stage, with the inputs its request needs."""

    job_id: str
    lot_id: str
    client_id: str
    total_lots: int
    attempts: int
    work: W

    @classmethod
    def made(cls, job_id: str, lot_id: str, client_id: str, total_lots: int, attempts: int, work: W
             ) -> LotWork[W]:
        """The lot with these fields, set as `__init__` sets them: that one, through
        `object.__setattr__` field by field (the class is frozen), took 0.76 us a claimed lot
        where this takes 0.37."""
        lot: LotWork[W] = object.__new__(cls)
        lot.__dict__.update(job_id=job_id, lot_id=lot_id, client_id=client_id, total_lots=total_lots,
                            attempts=attempts, work=work)
        return lot

    def with_work(self, work: W) -> LotWork[W]:
        """A copy with new work (e.g. after the image check)."""
        return replace(self, work=work)

    def with_usage(self, usage: Usage | None, model: str) -> LotWork[W]:
        """A copy whose work's `earlier_usage` also counts `usage` (an answer's, billed)."""
        if usage is None:
            return self
        return self.with_work(self.work.model_copy(update={
            "earlier_usage": summed((self.work.earlier_usage, usage), model)}))


class PartDone(Exception):
    """A usable answer that did a part of the lot's work (some of its languages): the lot goes
    again as `lot`, its progress kept, without using an attempt."""

    def __init__(self, lot: LotWork[Any], progress: str) -> None:
        super().__init__(f"{progress}; the rest go in another request")
        self.lot, self.progress = lot, progress


@dataclass(frozen=True)
class Prepared(Generic[W]):
    """The result of preparing claimed lots: requests to send, and lots settled without a call."""

    requests: list[tuple[LotWork[W], dict[str, Any]]]
    settled: list[tuple[LotWork[W], Event]]
    # Not prepared this time (the vision stage's image checks ran out of their time): back to the
    # queue unchanged, and the shard is sent with what was prepared.
    deferred: list[LotWork[W]] = field(default_factory=list)


class StageSpec(Protocol[W]):
    """The stage-specific parts: its work, requests, results and the events that carry them."""

    @property
    def name(self) -> str:
        """The stage's name ("vision" or "translation"), also its rows' key in the work tables."""
        ...

    @property
    def work_type(self) -> type[W]:
        """The model of the stage's work."""
        ...

    def output_topic(self) -> str:
        """Where this stage's events go."""
        ...

    def model(self) -> str:
        """The model every request of the stage uses (one model per batch file)."""
        ...

    def estimate_tokens(self, lot: LotWork[W]) -> int:
        """Tokens a lot's request is expected to enqueue (for the enqueued-token budget)."""
        ...

    async def prepare(self, lots: list[LotWork[W]]) -> Prepared[W]:
        """Request bodies for the lots that need the model; events for those that do not."""
        ...

    def result_event(self, lot: LotWork[W], body: Mapping[str, Any]) -> Event:
        """The event for a successful response body (raises ModelOutputError when unusable)."""
        ...

    def with_paid(self, lot: LotWork[W], body: Mapping[str, Any]) -> LotWork[W]:
        """The lot with the usage of an answer it cannot use added to its work's `earlier_usage`."""
        ...

    def retry_unusable(self, lot: LotWork[W], error: ModelOutputError) -> LotWork[W] | None:
        """New work to try again with after an unusable answer (e.g. more room), or None to fail."""
        ...

    def retry_refused(self, lot: LotWork[W], code: str | None, message: str) -> LotWork[W] | None:
        """New work without what OpenAI refused the request for (an image it could not fetch), or
        None when the refusal is the request's own."""
        ...

    def failure_event(self, lot: LotWork[W], reason: str) -> Event:
        """The event for a lot given up on."""
        ...

    def batch_submitted_event(self, job_id: str, shard_id: str, attempt: int, batch_id: str,
                              lot_ids: tuple[str, ...]) -> Event:
        """The event that puts a created batch on record."""
        ...
