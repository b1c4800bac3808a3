"""The translation stage: English HTML in, every requested language out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lotlens_common.events import Event, LotFailed, TranslationBatchSubmitted, TranslationCompleted
from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.languages import ENGLISH
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import (
    parse_translation_response,
    retry_room,
    target_languages,
    translation_request_body,
)
from lotlens_common.model.usage import priced, usage_of
from lotlens_common.stage.work import LotWork, Prepared, TranslationWork

_PROMPT_TOKENS = 400


def descriptions(languages: Sequence[str], english_html: str, translated: Mapping[str, str]
                 ) -> dict[str, str]:
    """Every requested language's text, in the order the client asked for them."""
    texts = {ENGLISH: english_html, **translated}
    return {language: texts[language] for language in languages}


@dataclass(frozen=True)
class TranslationStage:
    """Builds one structured-output translation request per lot and reads it back."""

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

    async def prepare(self, lots: list[LotWork[TranslationWork]]) -> Prepared[TranslationWork]:
        """One request per lot; nothing settles without the model here."""
        requests = [(lot, translation_request_body(
            lot.work.english_html, target_languages(lot.work.languages), self.models, lot.work.output_room))
            for lot in lots]
        return Prepared(requests, [])

    def result_event(self, lot: LotWork[TranslationWork], body: Mapping[str, Any]) -> Event:
        """TranslationCompleted with every requested language."""
        languages = lot.work.languages
        translated = parse_translation_response(body, target_languages(languages), lot.work.english_html)
        return TranslationCompleted(
            job_id=lot.job_id, lot_id=lot.lot_id,
            descriptions=descriptions(languages, lot.work.english_html, translated),
            usage=priced(usage_of(body), self.models.translation_model, self.models.prices,
                         self.billed_share))

    def retry_refused(self, lot: LotWork[TranslationWork], code: str | None, message: str) -> None:
        """Never: a translation request holds nothing OpenAI fetches."""
        return None

    def retry_unusable(self, lot: LotWork[TranslationWork],
                       error: ModelOutputError) -> LotWork[TranslationWork] | None:
        """A translation cut off by its output budget goes again with twice the room, up to the
        ceiling; one with a language untranslated or in another script goes again as it was."""
        room = retry_room(lot.work.english_html, target_languages(lot.work.languages), self.models,
                         lot.work.output_room, error)
        return None if room is None else lot.with_work(lot.work.model_copy(update={"output_room": room}))

    def failure_event(self, lot: LotWork[TranslationWork], reason: str) -> Event:
        """LotFailed at the translation stage."""
        return LotFailed(job_id=lot.job_id, lot_id=lot.lot_id, stage="translation", reason=reason,
                         total_lots=lot.total_lots,
                         processed_images=lot.work.processed_images,
                         missing_images=lot.work.missing_images)

    def batch_submitted_event(self, job_id: str, shard_id: str, attempt: int, batch_id: str,
                              lot_ids: tuple[str, ...]) -> Event:
        """TranslationBatchSubmitted."""
        return TranslationBatchSubmitted(job_id=job_id, shard_id=shard_id, attempt=attempt,
                                         batch_id=batch_id, lot_ids=lot_ids)
