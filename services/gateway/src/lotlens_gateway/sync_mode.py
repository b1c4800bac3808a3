"""Synchronous mode: one lot described while the client waits (≤ 300 s).

The same request building and parsing as the batch services (`lotlens_common.model`), called
directly: images are checked first (unreachable ones become `missing_images`; with none left the
lot fails without a model call), the vision model writes English, translation calls write every
other language (one, or several at once when the text in every language is more than the model
may write in one answer). Model outages answer 502, timeouts 504; a model answer that cannot be
used fails the lot with the reason, like in batch mode.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx2
import openai

from lotlens_common.clock import iso
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.model.errors import (
    ModelError,
    ModelOutputError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    ModelWrongLanguageError,
    client_reason,
    error_kind,
)
from lotlens_common.model.languages import is_english
from lotlens_common.model.openai_client import call_responses
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import (
    halved_part,
    kept_texts,
    language_parts,
    parse_translation_response,
    retry_room,
    target_languages,
    translation_request_body,
)
from lotlens_common.model.usage import Usage, answer_usage, total
from lotlens_common.model.vision import (
    next_suspect,
    parse_vision_response,
    refused_image,
    vision_request_body,
    vision_retry_room,
)
from lotlens_common.shares import Shares
from lotlens_common.stage.core.limits import fit_request_images
from lotlens_common.urls import Resolver, resolve_host
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.validation import LotRequest, Submission

log = logging.getLogger(__name__)

# Answers with a language untranslated or in another script a synchronous lot may take: as many
# as a batch lot's default attempts (`StageSettings.max_attempts`). Answers cut off by their
# output budget are not counted: doubling the room ends at the ceiling by itself (four answers
# for 9 languages of 1.1 KB: 6,476 → 12,952 → 25,904 → 32,768 tokens).
WRONG_LANGUAGE_TRIES = 3


@dataclass(frozen=True)
class ImagePolicy:
    """How images are checked before the model sees them."""

    allow_loopback: bool
    concurrency: int
    timeout_s: float
    max_bytes: int
    # Looks up image hosts before the guarded client (built with the same one) connects.
    resolve: Resolver = resolve_host
    # Places of the guarded client's connections, a share per client (`lookups.on_behalf_of`).
    shares: Shares | None = None

    async def check(self, urls: Sequence[str], http: httpx2.AsyncClient) -> ImageCheck:
        """Which of `urls` are usable, checked on the current client's share of `http`."""
        return await check_images(urls, http, self.allow_loopback, self.concurrency, max_bytes=self.max_bytes,
                                  timeout_s=self.timeout_s, resolve=self.resolve, shares=self.shares)


@dataclass(frozen=True)
class SyncDescriber:
    """Describes one lot now, within `timeout_s` in all."""

    model_client: openai.AsyncOpenAI
    http: httpx2.AsyncClient
    models: ModelSettings
    images: ImagePolicy
    timeout_s: float
    metrics: GatewayMetrics
    clock: Callable[[], datetime]

    async def describe(self, submission: Submission, arrived: float | None = None) -> dict[str, Any]:
        """The contract's 200 body; ApiError 502/504 when the model cannot answer in time.

        The budget runs from `arrived`, when the request came in (the event loop's clock; now by
        default): begun at the model calls, it gave a request held up before them (a reservation
        waiting on PostgreSQL, say) the whole budget again, and its answer came after the
        integrator's 300 s timeout, or a proxy's 504 instead of ours."""
        deadline = (asyncio.get_running_loop().time() if arrived is None else arrived) + self.timeout_s
        # Every answer OpenAI billed, as it comes: a 502 or 504 after some of them reports them too
        # (`details.usage`; they were lost), and the metrics count them whatever the outcome.
        used: list[Usage | None] = []
        try:
            async with asyncio.timeout_at(deadline):
                lot = await self._lot(submission.lots[0], submission.languages, used, deadline)
        except TimeoutError as exc:
            raise self._timed_out(f"The model did not answer within the {self.timeout_s:.0f} s budget",
                                  used) from exc
        except ModelTimeoutError as exc:
            # The model API's own timeout (a connection not made in time, say), not the budget's:
            # every 504 said the budget had run out, one after 0.13 s of a 30 s budget.
            raise self._timed_out(f"The model API timed out before the {self.timeout_s:.0f} s budget ran out",
                                  used) from exc
        except ModelUnavailableError as exc:
            # OpenAI's own words name the service's organization, its limits and its billing: for
            # the operators' log; the customer learns the kind of failure.
            log.warning("the model API failed a synchronous lot: %s", exc)
            details: dict[str, Any] = {"openai_error": error_kind(exc)}
            headers: dict[str, str] = {}
            if isinstance(exc, ModelRateLimitedError) and exc.retry_after_s:
                # Up, never down: a client told less than OpenAI asked comes back too early.
                details["retry_after"] = math.ceil(exc.retry_after_s)
                headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
            raise ApiError(502, "OPENAI_UNAVAILABLE", "The model API is unavailable, please retry later",
                           details=_with_usage(details, used), headers=headers) from exc
        except ModelRequestError as exc:  # OpenAI refused the service's key (401/403)
            # Its message names the key (masked): for the operators' log, not the customer.
            log.error("OpenAI refused the service's API key: %s", exc)
            raise ApiError(502, "OPENAI_UNAVAILABLE", "The model API is unavailable, please retry later",
                           details=_with_usage({"openai_error": f"HTTP {exc.status_code}: the service's "
                                                                "OpenAI key was refused"}, used)) from exc
        finally:
            self.metrics.count_usage(u for u in used if u is not None)
        return {
            "version": submission.version,
            "processing_mode": "synchronous",
            "total_lots": 1,
            "processed_at": iso(self.clock()),
            "lots": [lot],
        }

    async def _lot(self, lot: LotRequest, languages: Sequence[str], used: list[Usage | None],
                   deadline: float) -> dict[str, Any]:
        check = await self.images.check(lot.image_urls, self.http)
        # Images past OpenAI's per-request caps (500, 50 MB) are left out, like unreachable ones.
        fitted, left_out = fit_request_images(check.valid, check.sizes)
        images, missing = list(fitted), [*check.unreachable, *left_out]
        # The images a description came of: none until the English is read (a batch lot failed at
        # the vision stage reports 0; this one reported every image sent, even OpenAI refusing it).
        processed = 0
        # What a lot failing at translation keeps (paid for, as a batch lot keeps them).
        english: str | None = None
        translated: dict[str, str] = {}
        try:
            english = await self._english(lot.additional_info, images, missing, used, deadline)
            if english is None:
                reason = (f"none of the lot's {len(missing)} images could be fetched" if missing
                          else "the lot has no images")
                return self._failed(lot, missing, 0, reason, languages, {})
            processed = len(images)
            translations = (await self._translate(english, languages, used, deadline, translated)
                            if target_languages(languages) else {})
        except (ModelOutputError, ModelRequestError) as exc:
            if error_kind(exc) == "authentication":
                raise  # the service's key, not the lot: no failed lot to cache and replay
            log.warning("synchronous lot %s failed: %s", lot.lot_id, exc)
            # An output error is LotLens's own words about the answer; a refusal's are OpenAI's,
            # which name the configured model or the account: the client gets its type and code.
            reason = (client_reason("bad_request", exc.error_type, exc.code)
                      if isinstance(exc, ModelRequestError)
                      else f"the model could not describe the lot: {exc}")
            # The answers OpenAI gave before the lot failed were billed: a failed lot said nothing
            # of them (a batch lot failed in translation shows its vision's usage).
            kept = kept_texts(languages, english, translated)
            return _with_usage(self._failed(lot, missing, processed, reason, languages, kept), used)
        descriptions = [{"language": code, "damages": english if is_english(code) else translations[code]}
                        for code in languages]
        return {
            "lot_id": lot.lot_id,
            "status": "completed",
            "processed_at": iso(self.clock()),
            "processed_images": len(images),
            "descriptions": descriptions,
            "missing_images": missing,
            # Added: the answers' tokens and estimated cost (direct calls: the full price).
            "usage": total(u for u in used if u is not None).model_dump(),
        }

    async def _translate(self, english: str, languages: Sequence[str], used: list[Usage | None],
                         deadline: float, done: dict[str, str], most: int | None = None) -> dict[str, str]:
        """Every language's text, in as many requests as the model's output ceiling asks for
        (`language_parts`), sent at once: one after the other, three parts of a long text took
        longer than the 300 s budget. The first part that fails for good fails the lot; the
        others' answers were paid for and are counted all the same, their texts kept in `done`."""
        parts = language_parts(english, target_languages(languages), self.models, most)
        answers = await asyncio.gather(*(self._translate_part(english, part, used, deadline, done)
                                         for part in parts), return_exceptions=True)
        for answer in answers:
            if not isinstance(answer, BaseException):
                done.update(answer)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return {code: done[code] for code in target_languages(languages)}

    async def _translate_part(self, english: str, languages: Sequence[str], used: list[Usage | None],
                              deadline: float, done: dict[str, str]) -> dict[str, str]:
        """These languages' texts; a translation cut off by its output budget is asked again with
        twice the room until the room reaches the ceiling, then in two halves; one with a language
        untranslated or in another script for those languages only, the right ones kept, up to
        `WRONG_LANGUAGE_TRIES` such answers."""
        models, room, wrong_language = self.models, 1, 0
        kept: dict[str, str] = {}
        while True:
            request = translation_request_body(english, languages, models, room)
            answer = await self._call("translation", request, deadline)
            used.append(answer_usage(answer, models.translation_model, models.prices))
            try:
                return {**kept, **parse_translation_response(answer, languages, english)}
            except ModelOutputError as exc:
                if isinstance(exc, ModelWrongLanguageError):
                    wrong_language += 1
                    kept.update(exc.right)
                    # Paid for, kept at once: a retry refused (a 400 from `_call`) fails the lot
                    # with them; kept only when this loop raised, they were dropped.
                    done.update(exc.right)
                    languages = exc.languages
                more = retry_room(english, languages, models, room, exc)
                if more is None and (half := halved_part(english, languages, models, room, exc)):
                    return {**kept, **await self._translate(english, languages, used, deadline, done, half)}
                if more is None or wrong_language == WRONG_LANGUAGE_TRIES:
                    raise
                room = more

    async def _english(self, notes: str, images: list[str], missing: list[str], used: list[Usage | None],
                       deadline: float) -> str | None:
        """The English description, or None when no image is left. One cut off by its output
        budget is asked once more with more room (`vision_retry_room`), as a batch lot is: a
        reasoning model spends its reasoning from the same budget, so it often fits the second time.
        Not when less of the budget is left than the first took: the second answer, written past
        all the first wrote, cannot come sooner; sent, it ended in a 504 whose retries paid for
        the images again, where the lot fails with its reason and usage (API.md)."""
        models, room, clock = self.models, 1, asyncio.get_running_loop().time
        while True:
            began = clock()
            answer = await self._vision(notes, images, missing, deadline, room)
            if answer is None:
                return None
            used.append(answer_usage(answer, models.vision_model, models.prices))
            try:
                return parse_vision_response(answer)
            except ModelOutputError as exc:
                more = vision_retry_room(models, room, exc)
                if more is None or deadline - clock() < clock() - began:
                    raise
                room = more

    async def _vision(self, notes: str, images: list[str], missing: list[str],
                      deadline: float, room: int) -> dict[str, Any] | None:
        """The vision answer, or None when no image is left. An image OpenAI refuses goes from
        `images` to `missing`, and the others are asked again; when the refusal does not say which,
        the images are left out one at a time (`next_suspect`): the one out when it is answered."""
        suspects: list[str] = []
        while images:
            sent = [url for url in images if url not in suspects[-1:]] or list(images)
            try:
                answer = await self._call("vision", vision_request_body(notes, sent, self.models, room),
                                          deadline)
            except ModelRequestError as exc:
                refused = refused_image(exc.code, str(exc), sent, exc.param)
                if refused is not None:
                    images.remove(refused)
                    missing.append(refused)
                    suspects.clear()  # the named image explains it: the one left out goes back in
                elif (suspect := next_suspect(exc.code, images, suspects)) is not None:
                    suspects.append(suspect)
                else:
                    raise
                continue
            missing.extend(url for url in images if url not in sent)
            images[:] = sent
            return answer
        return None

    async def _call(self, api: str, body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        try:
            # A 429 whose Retry-After ends past the deadline is answered at once (502 with it):
            # slept on, it ended in a 504 without it, the budget spent waiting for nothing.
            return await call_responses(self.model_client, body, deadline=deadline)
        except ModelError as exc:
            self.metrics.openai_errors.labels(api=api, kind=error_kind(exc)).inc()
            raise

    def _timed_out(self, message: str, used: list[Usage | None]) -> ApiError:
        return ApiError(504, "OPENAI_TIMEOUT", message,
                        details=_with_usage({"timeout_seconds": self.timeout_s}, used))

    def _failed(self, lot: LotRequest, missing: list[str], processed: int, reason: str,
                languages: Sequence[str], kept: Mapping[str, str]) -> dict[str, Any]:
        """A failed lot: `descriptions` empty, as it always was; the texts it keeps (paid for) in
        `partial_descriptions` and the languages it lacks in `missing_languages`, as in batch mode."""
        return {
            "lot_id": lot.lot_id,
            "status": "failed",
            "processed_at": iso(self.clock()),
            "processed_images": processed,
            "descriptions": [],  # a failed lot's, as ever: clients read it as the finished lot's texts
            "missing_images": missing,
            "error_message": reason,
            "partial_descriptions": [{"language": code, "damages": html} for code, html in kept.items()],
            "missing_languages": [code for code in languages if code not in kept],
        }


def _with_usage(body: dict[str, Any], used: Sequence[Usage | None]) -> dict[str, Any]:
    """`body` with the summed `usage` of the answers OpenAI billed; as it is when there were none."""
    paid = [u for u in used if u is not None]
    return {**body, "usage": total(paid).model_dump()} if paid else body
