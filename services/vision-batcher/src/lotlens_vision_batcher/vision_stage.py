"""The vision stage: lots with image URLs in, English HTML descriptions out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from lotlens_common.events import Event, LotFailed, VisionBatchSubmitted, VisionCompleted
from lotlens_common.image_budget import started_by
from lotlens_common.image_hosts import HostHealth
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.lookups import on_behalf_of
from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.usage import Usage, answer_usage, summed
from lotlens_common.model.vision import (
    next_suspect,
    parse_vision_response,
    refused_image,
    vision_request_body,
    vision_retry_room,
)
from lotlens_common.stage.core.image_tokens import max_image_tokens
from lotlens_common.stage.core.limits import fit_request_images
from lotlens_common.stage.work import LotWork, Prepared, VisionWork
from lotlens_common.urls import guarded_async_client
from lotlens_vision_batcher.config import VisionBatcherSettings

# (urls) -> which are usable (with their sizes) and which are not.
ImageChecker = Callable[[Sequence[str]], Awaitable[ImageCheck]]

_PROMPT_TOKENS = 600


def image_checker(settings: VisionBatcherSettings) -> ImageChecker:
    """Checks with the settings' limits, through a client that connects only to the address it
    checked, so DNS cannot change between check and fetch."""
    http = guarded_async_client(settings.allow_loopback_urls, settings.image_check_timeout_s,
                                max_connections=settings.image_check_concurrency)
    # For the process's life: a job's lots come in chunks and rounds, and its tarpit host, once
    # found out, stays down for all of them (each chunk re-learning it cost three timeouts).
    hosts = HostHealth(settings.image_host_down_after, settings.image_host_down_s)

    async def check(urls: Sequence[str]) -> ImageCheck:
        return await check_images(urls, http, settings.allow_loopback_urls, settings.image_check_concurrency,
                                  max_bytes=settings.max_image_bytes, hosts=hosts)

    return check


class RecentChecks:
    """Image verdicts of the last `ttl_s` seconds, so a URL shared by many lots is checked once.

    A shard is prepared in chunks, and the lots of one job often share images (a seller's logo,
    a placeholder): without this, each chunk of a 50,000-lot shard checked them all again.
    """

    def __init__(self, ttl_s: float = 60.0, max_urls: int = 20_000) -> None:
        self.ttl_s, self.max_urls = ttl_s, max_urls
        self._seen: dict[str, tuple[int | None, float]] = {}

    def known(self, urls: Sequence[str]) -> dict[str, int | None]:
        """Those of the URLs with a verdict still fresh: url -> its bytes (None: unusable)."""
        now = time.monotonic()
        return {url: seen[0] for url in urls
                if (seen := self._seen.get(url)) is not None and now - seen[1] < self.ttl_s}

    def remember(self, check: ImageCheck) -> None:
        """Keep these verdicts; when full, forget everything (the next check starts afresh)."""
        if len(self._seen) + len(check.valid) + len(check.unreachable) > self.max_urls:
            self._seen.clear()
        now = time.monotonic()
        self._seen.update({url: (check.sizes.get(url, 0), now) for url in check.valid})
        self._seen.update({url: (None, now) for url in check.unreachable})


@dataclass(frozen=True)
class VisionStage:
    """Builds vision requests from reachable images and reads the English description back."""

    topic: str
    models: ModelSettings
    check_images: ImageChecker
    name: str = "vision"
    # The Batch API bills a share of the list price; direct calls pay it whole.
    billed_share: float = 1.0
    recent: RecentChecks = field(default_factory=RecentChecks, compare=False)
    # A chunk's image checks start none after this long (but its first lot's): the lots left
    # without verdicts are `Prepared.deferred`, so one job's slow hosts cannot hold the round.
    check_budget_s: float | None = None

    @property
    def work_type(self) -> type[VisionWork]:
        """VisionWork."""
        return VisionWork

    def output_topic(self) -> str:
        """The vision topic."""
        return self.topic

    def model(self) -> str:
        """The vision model."""
        return self.models.vision_model

    def estimate_tokens(self, lot: LotWork[VisionWork]) -> int:
        """Input tokens: the most the images can cost this model, plus instructions and notes."""
        images = len(_valid_images(lot))
        notes = len(lot.work.additional_info) // 4
        per_image = max_image_tokens(self.models.vision_model, self.models.image_detail)
        return images * per_image + _PROMPT_TOKENS + notes

    async def prepare(self, lots: list[LotWork[VisionWork]]) -> Prepared[VisionWork]:
        """Check every image first: a lot with none reachable fails here and costs no model call.

        Only the lots whose missing images changed carry new work back (usually none: nothing
        to write), and a URL checked in the last minute is not checked again. OpenAI takes at
        most 500 images and 50 MB of them a request: images past that are left out of the request
        and listed with the missing ones, and the lot is described from the others.
        """
        # Judged once a lot: asked three times, it was a tenth of a lot's preparation.
        failed_before = [_failed_before(lot) for lot in lots]
        fresh = [lot for lot, failed in zip(lots, failed_before, strict=True) if not failed]
        every_url = list(dict.fromkeys(chain.from_iterable(lot.work.image_urls for lot in fresh)))
        sizes = self.recent.known(every_url)
        unchecked: dict[str, dict[str, None]] = {}  # client -> its lots' URLs without a verdict
        firsts: dict[str, int] = {}  # client -> how many of them its first lot needing a check has
        # Usually every URL has a fresh verdict (a job's lots share their images): no lot is looked at.
        for lot in fresh if len(sizes) < len(every_url) else ():
            mine = unchecked.setdefault(lot.client_id, {})
            mine.update((url, None) for url in lot.work.image_urls if url not in sizes)
            if mine:
                firsts.setdefault(lot.client_id, len(mine))
        deadline = None if self.check_budget_s is None else time.monotonic() + self.check_budget_s
        checks = await asyncio.gather(*(self._check(client, list(urls), deadline, firsts[client])
                                        for client, urls in unchecked.items() if urls))
        for check in checks:
            self.recent.remember(check)
            sizes.update({url: check.sizes.get(url, 0) for url in check.valid})
        usable = {url: size for url, size in sizes.items() if size is not None}
        late = {url for check in checks for url in check.unchecked}  # past the deadline: no verdict
        requests: list[tuple[LotWork[VisionWork], dict[str, Any]]] = []
        settled: list[tuple[LotWork[VisionWork], Event]] = []
        deferred: list[LotWork[VisionWork]] = []
        for lot, failed in zip(lots, failed_before, strict=True):
            if failed:  # its LotFailed may be out already: the same verdict again
                reason = f"none of the lot's {len(lot.work.image_urls)} images could be fetched"
                settled.append((lot, self.failure_event(lot, reason)))
                continue
            if late and not late.isdisjoint(lot.work.image_urls):
                deferred.append(lot)  # sent unchanged to the queue's end (`submit._build`)
                continue
            valid, missing = _request_images(lot.work, usable)
            checked = (lot if missing == lot.work.missing_images
                       else lot.with_work(lot.work.model_copy(update={"missing_images": missing})))
            if not valid:
                reason = f"none of the lot's {len(missing)} images could be fetched"
                settled.append((checked, self.failure_event(checked, reason)))
                continue
            body = vision_request_body(lot.work.additional_info, valid, self.models, lot.work.output_room)
            requests.append((checked, body))
        return Prepared(requests, settled, deferred)

    async def _check(self, client_id: str, urls: list[str], deadline: float | None, first: int) -> ImageCheck:
        """A client's images, its hosts looked up within its own share of the lookup threads:
        another client's hosts on a DNS that never answers cannot hold them all. Past `deadline`,
        only the `first` URLs (its first lot's) are still checked: every chunk gets a lot further."""
        window = started_by(deadline, first) if deadline is not None else contextlib.nullcontext()
        with on_behalf_of(client_id), window:
            return await self.check_images(urls)

    def result_event(self, lot: LotWork[VisionWork], body: Mapping[str, Any]) -> Event:
        """VisionCompleted with the parsed HTML."""
        work = lot.work
        usage = self._usage(body)
        if work.earlier_usage is not None:  # an unusable answer's, billed before this one
            usage = summed((work.earlier_usage, usage), self.models.vision_model)
        # Counted, not listed: a lot's images less those missing (`_valid_images`).
        images = len(work.image_urls) if not work.missing_images else len(_valid_images(lot))
        return VisionCompleted(
            job_id=lot.job_id, lot_id=lot.lot_id, english_html=parse_vision_response(body),
            languages=work.languages, total_lots=lot.total_lots, processed_images=images,
            missing_images=work.missing_images, usage=usage)

    def with_paid(self, lot: LotWork[VisionWork], body: Mapping[str, Any]) -> LotWork[VisionWork]:
        """The lot with an unusable answer's usage kept: billed, its LotFailed carries it."""
        return lot.with_usage(self._usage(body), self.models.vision_model)

    def _usage(self, body: Mapping[str, Any]) -> Usage | None:
        return answer_usage(body, self.models.vision_model, self.models.prices, self.billed_share)

    def retry_unusable(self, lot: LotWork[VisionWork], error: ModelOutputError) -> LotWork[VisionWork] | None:
        """A description cut off by its output budget goes again once with more room (a reasoning
        model spends its reasoning from the same budget); any other unusable one would come back
        the same."""
        room = vision_retry_room(self.models, lot.work.output_room, error)
        return None if room is None else lot.with_work(lot.work.model_copy(update={"output_room": room}))

    def retry_refused(self, lot: LotWork[VisionWork], code: str | None,
                      message: str) -> LotWork[VisionWork] | None:
        """The lot without the image OpenAI could not fetch or read: described from the others,
        that image listed as missing (API.md) by the next `prepare`. When the refusal does not
        name it, the images are left out one at a time (`next_suspect`) until one is answered."""
        sent = _valid_images(lot)
        refused = refused_image(code, message, sent)
        if refused is not None:
            # The suspects are cleared: the named image explains the refusal, and nothing showed
            # the one left out was bad (kept out, it was listed missing).
            refused_images = (*lot.work.refused_images, refused)
            return lot.with_work(lot.work.model_copy(
                update={"refused_images": refused_images, "suspects": (), "refused_before_suspects": 0}))
        # The last suspect, out of the request refused, goes back in: it was not the one.
        usable = [url for url in lot.work.image_urls if url in sent or url in lot.work.suspects[-1:]]
        suspect = next_suspect(code, usable, lot.work.suspects)
        if suspect is None:
            return None
        suspects = (*lot.work.suspects, suspect)
        return lot.with_work(lot.work.model_copy(
            update={"suspects": suspects, "refused_before_suspects": len(lot.work.refused_images)}))

    def failure_event(self, lot: LotWork[VisionWork], reason: str) -> Event:
        """LotFailed at the vision stage, with what its answers used (one it could not use)."""
        return LotFailed(job_id=lot.job_id, lot_id=lot.lot_id, stage="vision", reason=reason,
                         total_lots=lot.total_lots,
                         missing_images=lot.work.missing_images, usage=lot.work.earlier_usage)

    def batch_submitted_event(self, job_id: str, shard_id: str, attempt: int, batch_id: str,
                              lot_ids: tuple[str, ...]) -> Event:
        """VisionBatchSubmitted."""
        return VisionBatchSubmitted(job_id=job_id, shard_id=shard_id, attempt=attempt,
                                    batch_id=batch_id, lot_ids=lot_ids)


def _failed_before(lot: LotWork[VisionWork]) -> bool:
    """Whether an earlier `prepare` found none of the lot's images usable and kept that verdict
    (a lot sent again always had one: this is a preparation a crash cut short)."""
    missing = lot.work.missing_images  # none, nearly always: no set is built
    return bool(missing) and bool(lot.work.image_urls) and set(lot.work.image_urls) <= set(missing)


def _request_images(work: VisionWork, usable: Mapping[str, int]) -> tuple[list[str], tuple[str, ...]]:
    """(the images the lot's request carries, in its order; those missing from it): each usable
    one that fits (`fit_request_images`), less those OpenAI refused and the last suspect.

    A lot with nothing refused or suspected, every image sent (nearly all), is looked at once:
    built for every lot, the sets and lists of the other lots took a fifth of its preparation
    (61k -> 49k instructions a lot, its request body included)."""
    urls = work.image_urls
    sendable = [url for url in urls if url in usable]
    if work.refused_images or work.suspects:
        refused = set(work.refused_images)
        sendable = [url for url in sendable if url not in refused]
        # The image under suspicion stays out (`retry_refused`), unless it is all there is.
        sendable = [url for url in sendable if url not in work.suspects[-1:]] or sendable
    valid, _ = fit_request_images(sendable, usable)
    if len(valid) == len(urls):  # each of the lot's images, in its order: none missing
        return valid, ()
    sent = set(valid)
    return valid, tuple(url for url in urls if url not in sent)


def _valid_images(lot: LotWork[VisionWork]) -> list[str]:
    """The lot's images less those its last check could not fetch (all of them before a check)."""
    if not lot.work.missing_images:
        return list(lot.work.image_urls)
    missing = set(lot.work.missing_images)
    return [url for url in lot.work.image_urls if url not in missing]
