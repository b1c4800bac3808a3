"""The vision and translation stage rules, with a fake image checker and no I/O."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from lotlens_common.events import LotFailed, TranslationCompleted, VisionCompleted
from lotlens_common.images import ImageCheck
from lotlens_common.model.errors import ModelIncompleteError, ModelOutputError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork
from lotlens_translator.translation_stage import TranslationStage, descriptions
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage

checked: list[list[str]] = []


async def fake_checker(urls: Sequence[str]) -> ImageCheck:
    """Dead URLs are unreachable; a `-<n>mb` URL is an image of n MB (the others are small)."""
    checked.append(list(urls))
    valid = tuple(u for u in urls if "dead" not in u)
    sizes = {u: int(found[1]) * 1_000_000 if (found := re.search(r"-(\d+)mb", u)) else 1000 for u in valid}
    return ImageCheck(valid=valid, unreachable=tuple(u for u in urls if "dead" in u), sizes=sizes)


def vision_lot(*urls: str) -> LotWork[VisionWork]:
    return LotWork("job", "lot", "client", 1, 1, VisionWork(
        additional_info="Camry, front collision", image_urls=urls, languages=("en", "de")))


def stage() -> VisionStage:
    return VisionStage("vision", ModelSettings(image_detail="low"), fake_checker)


def test_images_are_checked_before_the_request_and_only_reachable_ones_are_sent() -> None:
    prepared = asyncio.run(stage().prepare([vision_lot("https://a/1.jpg", "https://a/dead.jpg")]))
    [(lot, body)] = prepared.requests
    images = [part for part in body["input"][0]["content"] if part["type"] == "input_image"]
    assert [part["image_url"] for part in images] == ["https://a/1.jpg"]
    assert lot.work.missing_images == ("https://a/dead.jpg",)
    assert prepared.settled == []


def test_a_lot_with_no_reachable_image_is_settled_as_failed_without_a_request() -> None:
    prepared = asyncio.run(stage().prepare([vision_lot("https://a/dead-1.jpg", "https://a/dead-2.jpg")]))
    assert prepared.requests == []
    [(_, event)] = prepared.settled
    assert isinstance(event, LotFailed) and event.stage == "vision"
    assert event.missing_images == ("https://a/dead-1.jpg", "https://a/dead-2.jpg")


def test_images_past_50_mb_are_left_out_of_the_request_and_listed_as_missing() -> None:
    urls = [f"https://a/{i}-9mb.jpg" for i in range(6)] + ["https://a/small.jpg"]
    prepared = asyncio.run(stage().prepare([vision_lot(*urls)]))
    [(lot, body)] = prepared.requests
    sent = [part["image_url"] for part in body["input"][0]["content"] if part["type"] == "input_image"]
    # Five 9 MB images make 45 MB; the sixth would cross 50 MB, the small one after it still fits.
    assert sent == [*urls[:5], "https://a/small.jpg"]
    assert lot.work.missing_images == (urls[5],)
    completed = stage().result_event(lot, {"output": [{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "<p>Dented.</p>"}]}]})
    assert isinstance(completed, VisionCompleted)
    assert completed.processed_images == 6 and completed.missing_images == (urls[5],)


def test_a_lot_whose_images_are_all_reachable_carries_no_new_work_to_save() -> None:
    lot = vision_lot("https://a/1.jpg", "https://a/2.jpg")
    [(prepared, _)] = asyncio.run(stage().prepare([lot])).requests
    assert prepared.work == lot.work


def test_an_image_shared_by_later_chunks_is_checked_only_once() -> None:
    vision = stage()
    checked.clear()
    asyncio.run(vision.prepare([vision_lot("https://a/logo.jpg", "https://a/1.jpg")]))
    asyncio.run(vision.prepare([vision_lot("https://a/logo.jpg", "https://a/dead.jpg")]))
    second = asyncio.run(vision.prepare([vision_lot("https://a/logo.jpg", "https://a/dead.jpg")]))
    assert checked == [["https://a/logo.jpg", "https://a/1.jpg"], ["https://a/dead.jpg"]]
    assert second.requests[0][0].work.missing_images == ("https://a/dead.jpg",)


def test_image_verdicts_are_forgotten_after_their_time() -> None:
    vision = VisionStage("vision", ModelSettings(), fake_checker, recent=RecentChecks(ttl_s=0.0))
    checked.clear()
    for _ in range(2):
        asyncio.run(vision.prepare([vision_lot("https://a/1.jpg")]))
    assert checked == [["https://a/1.jpg"], ["https://a/1.jpg"]]


def test_the_result_event_carries_the_html_and_the_image_counts() -> None:
    lot = vision_lot("u1", "u2", "u3")
    lot = lot.with_work(lot.work.model_copy(update={"missing_images": ("u3",)}))
    body = {"status": "completed", "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "<p>Dent.</p>"}]}]}
    event = stage().result_event(lot, body)
    assert event == VisionCompleted(job_id="job", lot_id="lot", english_html="<p>Dent.</p>",
                                    languages=("en", "de"), total_lots=1, processed_images=2,
                                    missing_images=("u3",))


def test_token_estimate_grows_with_images_at_the_models_worst_case() -> None:
    one, three = vision_lot("a"), vision_lot("a", "b", "c")
    # o4-mini counts 32-px patches, at most 1,536 an image, times 1.72 (at any detail).
    assert stage().estimate_tokens(three) - stage().estimate_tokens(one) == 2 * 2642
    gpt4o = VisionStage("vision", ModelSettings(vision_model="gpt-4o", image_detail="low"), fake_checker)
    assert gpt4o.estimate_tokens(three) - gpt4o.estimate_tokens(one) == 2 * 85


def test_translations_come_back_in_the_order_the_client_asked_for() -> None:
    assert list(descriptions(["ru", "en", "de"], "<p>x</p>", {"de": "d", "ru": "r"})) == ["ru", "en", "de"]


def test_translation_requests_ask_only_for_the_languages_other_than_english() -> None:
    # `en-Latn` is English too (its only script): it was asked for, and paid, as a translation.
    lot = LotWork("job", "lot", "client", 1, 1, TranslationWork(
        english_html="<p>Dent.</p>", languages=("en", "en-Latn", "fr")))
    [(_, body)] = asyncio.run(TranslationStage("t", ModelSettings()).prepare([lot])).requests
    assert body["text"]["format"]["schema"]["required"] == ["fr"]
    answer = {"status": "completed", "output": [{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": '{"fr": "<p>Bosse.</p>"}'}]}]}
    event = TranslationStage("t", ModelSettings()).result_event(lot, answer)
    assert event == TranslationCompleted(job_id="job", lot_id="lot", descriptions={
        "en": "<p>Dent.</p>", "en-Latn": "<p>Dent.</p>", "fr": "<p>Bosse.</p>"})


def test_a_lot_is_described_from_at_most_500_images_and_the_rest_are_listed_missing() -> None:
    urls = [f"https://a/{i}.jpg" for i in range(502)]
    [(lot, body)] = asyncio.run(stage().prepare([vision_lot(*urls)])).requests
    images = [part for part in body["input"][0]["content"] if part["type"] == "input_image"]
    assert len(images) == 500 and lot.work.missing_images == tuple(urls[500:])


def test_a_translation_cut_off_by_its_budget_is_retried_with_twice_the_room_up_to_the_ceiling() -> None:
    spec = TranslationStage("translation", ModelSettings())
    lot = LotWork("job", "lot", "client", 1, 1, TranslationWork(
        english_html="<p>Dent.</p>", languages=("en", "fr", "de")))
    cut = ModelIncompleteError("the response is incomplete (max_output_tokens)", "max_output_tokens")
    again = spec.retry_unusable(lot, cut)
    assert again is not None and again.work.output_room == 2
    [(_, body)] = asyncio.run(spec.prepare([again])).requests
    [(_, first)] = asyncio.run(spec.prepare([lot])).requests
    assert body["max_output_tokens"] == 2 * first["max_output_tokens"]
    assert spec.retry_unusable(lot, ModelIncompleteError("filtered", "content_filter")) is None
    assert spec.retry_unusable(lot, ModelOutputError("not JSON")) is None
    huge = lot.with_work(lot.work.model_copy(update={"english_html": "x" * 100_000, "languages": ("fr",)}))
    assert spec.retry_unusable(huge, cut) is None  # one language already at the ceiling: it fails
