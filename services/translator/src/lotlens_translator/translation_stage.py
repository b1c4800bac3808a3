"""The translation stage: English HTML in, every requested language out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lotlens_common.events import Event, LotFailed, TranslationBatchSubmitted, TranslationCompleted
from lotlens_common.model.errors import ModelOutputError, ModelWrongLanguageError
from lotlens_common.model.languages import is_english
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
from lotlens_common.model.usage import Usage, answer_usage, summed
from lotlens_common.stage.work import LotWork, PartDone, Prepared, TranslationWork

_PROMPT_TOKENS = 400


def _left(work: TranslationWork) -> list[str]:
    """The languages the lot still lacks, in the client's order."""
    return [code for code in target_languages(work.languages) if code not in work.translated]


def descriptions(languages: Sequence[str], english_html: str, translated: Mapping[str, str]
                 ) -> dict[str, str]:
    """Every requested language's text, in the order the client asked for them."""
    return {code: english_html if is_english(code) else translated[code] for code in languages}


@dataclass(frozen=True)
class TranslationStage:
    """Builds a lot's structured-output translation requests, one per batch, and reads them back."""

    topic: str
    models: ModelSettings
    name: str = "translation"
    # The Batch API bills a share of the list price; direct calls pay it whole.
    billed_share: float = 1.0

    @property
    def work_type(self) -> type[TranslationWork]:
        """TranslationWork."""
        return TranslationWork

    def output_topic(self) -> str:
        """The translation topic."""
        return self.topic

    def model(self) -> str:
        """The translation model."""
        return self.models.translation_model

    def estimate_tokens(self, lot: LotWork[TranslationWork]) -> int:
        """Input tokens: the English text (about 4 characters a token) plus instructions."""
        return len(lot.work.english_html) // 4 + _PROMPT_TOKENS

    def part(self, work: TranslationWork) -> list[str]:
        """The languages the lot's request in flight asks for: `sent_part`, kept since a part
        worked out again from today's settings (the model, its output ceiling) may be another.
        Empty, it asked for every language left, or (a row of the previous release, which kept
        no part) the first part by that release's settings: today's first part is the guess
        (`result_event` reads the languages from the answer instead)."""
        return list(work.sent_part) or self.next_part(work)

    def next_part(self, work: TranslationWork) -> list[str]:
        """The languages the lot's next request asks for: the first part of those not translated
        yet (all of them, unless the text in every one is more than the model may write in one
        answer)."""
        return self._first_part(work, _left(work))

    def _first_part(self, work: TranslationWork, left: list[str]) -> list[str]:
        return language_parts(work.english_html, left, self.models, work.most_per_request)[0]

    async def prepare(self, lots: list[LotWork[TranslationWork]]) -> Prepared[TranslationWork]:
        """One request per lot, for its next part of the languages, the part kept in its work;
        nothing settles without the model here."""
        requests = []
        for lot in lots:
            left = _left(lot.work)
            part = self._first_part(lot.work, left)
            sent = tuple(part) if len(part) < len(left) else ()
            # Copied only when the part changes: a lot asking for every language left (nearly
            # all) kept a copy of its work identical to the one claimed, 4 us a lot.
            kept = lot if sent == lot.work.sent_part else lot.with_work(
                lot.work.model_copy(update={"sent_part": sent}))
            requests.append((kept, translation_request_body(lot.work.english_html, part, self.models,
                                                            lot.work.output_room)))
        return Prepared(requests, [])

    def result_event(self, lot: LotWork[TranslationWork], body: Mapping[str, Any]) -> Event:
        """TranslationCompleted with every requested language, its usage the sum of its parts';
        PartDone when languages are left for another request (in the next batch)."""
        work, model = lot.work, self.models.translation_model
        # With no part kept, the answer's languages say which it was: the previous release's
        # first part (three of nine) was read as every language left and the lot, paid for, failed.
        answer = parse_translation_response(body, work.sent_part or _left(work), work.english_html,
                                            some_of=not work.sent_part)
        translated = {**work.translated, **answer} if work.translated else answer
        usage = self._usage(body)
        if work.earlier_usage is not None:  # the parts done before, or an unusable answer's
            usage = summed((work.earlier_usage, usage), model)
        targets = target_languages(work.languages)
        if len(translated) < len(targets):
            raise PartDone(lot.with_work(work.model_copy(update={
                "translated": translated, "earlier_usage": usage, "output_room": 1, "sent_part": ()})),
                f"{len(translated)} of {len(targets)} languages translated")
        return TranslationCompleted(
            job_id=lot.job_id, lot_id=lot.lot_id,
            descriptions=descriptions(work.languages, work.english_html, translated), usage=usage)

    def with_paid(self, lot: LotWork[TranslationWork], body: Mapping[str, Any]) -> LotWork[TranslationWork]:
        """The lot with an unusable answer's usage kept: billed, it goes with the lot's next answer
        or its LotFailed."""
        return lot.with_usage(self._usage(body), self.models.translation_model)

    def _usage(self, body: Mapping[str, Any]) -> Usage | None:
        return answer_usage(body, self.models.translation_model, self.models.prices, self.billed_share)

    def retry_refused(self, lot: LotWork[TranslationWork], code: str | None, message: str) -> None:
        """Never: a translation request holds nothing OpenAI fetches."""
        return None

    def retry_unusable(self, lot: LotWork[TranslationWork],
                       error: ModelOutputError) -> LotWork[TranslationWork] | None:
        """A translation cut off by its output budget goes again with twice the room, up to the
        ceiling, then with half its languages; one with languages untranslated or in another
        script goes again for those only, the others kept as a part done is."""
        work, part = lot.work, self.part(lot.work)
        room = retry_room(work.english_html, part, self.models, work.output_room, error)
        if room is not None and isinstance(error, ModelWrongLanguageError):
            # Asked again, the languages that were right were paid for twice, and could come back
            # wrong and fail the lot. What their answer used is in `earlier_usage` (`with_paid`).
            return lot.with_work(work.model_copy(update={
                "output_room": room, "translated": {**work.translated, **error.right}, "sent_part": ()}))
        if room is not None:
            return lot.with_work(work.model_copy(update={"output_room": room}))
        half = halved_part(work.english_html, part, self.models, work.output_room, error)
        return None if half is None else lot.with_work(
            work.model_copy(update={"output_room": 1, "most_per_request": half}))

    def failure_event(self, lot: LotWork[TranslationWork], reason: str) -> Event:
        """LotFailed at the translation stage, with what its answers used (the parts translated,
        answers it could not use) and the descriptions it keeps (`kept_texts`)."""
        return LotFailed(job_id=lot.job_id, lot_id=lot.lot_id, stage="translation", reason=reason,
                         total_lots=lot.total_lots,
                         processed_images=lot.work.processed_images,
                         missing_images=lot.work.missing_images, usage=lot.work.earlier_usage,
                         descriptions=kept_texts(lot.work.languages, lot.work.english_html,
                                                 lot.work.translated))

    def batch_submitted_event(self, job_id: str, shard_id: str, attempt: int, batch_id: str,
                              lot_ids: tuple[str, ...]) -> Event:
        """TranslationBatchSubmitted."""
        return TranslationBatchSubmitted(job_id=job_id, shard_id=shard_id, attempt=attempt,
                                         batch_id=batch_id, lot_ids=lot_ids)
