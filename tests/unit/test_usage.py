"""Usage read from model answers, priced by the price table (with the Batch API's discount), summed."""

from __future__ import annotations

import pytest

from lotlens_common.events import TranslationCompleted, VisionCompleted
from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.usage import JobUsage, ModelPrice, Usage, answer_usage, total
from lotlens_common.settings import OpenAISettings, ServiceSettings
from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher.vision_stage import VisionStage

RESPONSES_USAGE = {"input_tokens": 2000, "input_tokens_details": {"cached_tokens": 500},
                   "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 128},
                   "total_tokens": 2300}
CHAT_USAGE = {"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
              "prompt_tokens_details": {"cached_tokens": 500},
              "completion_tokens_details": {"reasoning_tokens": 128}}
PRICES = {"o4-mini": ModelPrice(input=1.10, cached_input=0.275, output=4.40)}


@pytest.mark.parametrize("usage", [RESPONSES_USAGE, CHAT_USAGE], ids=["responses", "chat"])
def test_every_kind_of_token_is_read_from_either_api_shape(usage: dict[str, object]) -> None:
    assert answer_usage({"usage": usage}, "m", {}) == Usage(
        input_tokens=2000, cached_input_tokens=500, output_tokens=300, reasoning_tokens=128, model="m")


def test_an_answer_without_usage_has_none_and_broken_counts_read_as_zero() -> None:
    assert answer_usage({"output": []}, "m", PRICES) is None
    broken = {"usage": {"input_tokens": -3, "output_tokens": "many"}}
    assert answer_usage(broken, "m", PRICES) == Usage(model="m")


def test_cost_bills_cached_input_at_its_price_and_reasoning_as_output() -> None:
    used = {"usage": RESPONSES_USAGE}
    direct = answer_usage(used, "o4-mini", PRICES)
    assert direct is not None and direct.model == "o4-mini"
    # 1,500 fresh input, 500 cached, 300 output (its 128 reasoning included).
    assert direct.estimated_cost_usd is not None
    assert direct.estimated_cost_usd == pytest.approx((1500 * 1.10 + 500 * 0.275 + 300 * 4.40) / 1e6)
    batch = answer_usage(used, "o4-mini", PRICES, discount=0.5)
    assert batch is not None and batch.estimated_cost_usd == pytest.approx(direct.estimated_cost_usd / 2)
    unknown = answer_usage(used, "a-model-without-a-price", PRICES)
    assert unknown is not None and unknown.estimated_cost_usd is None and unknown.input_tokens == 2000


@pytest.mark.parametrize("usage", [
    RESPONSES_USAGE, CHAT_USAGE, {"input_tokens": -3, "output_tokens": "many"},
    {"input_tokens": True, "input_tokens_details": [], "output_tokens_details": {"reasoning_tokens": 2.5}},
    {"prompt_tokens_details": None, "completion_tokens": 7}, "not a block"],
    ids=["responses", "chat", "broken", "odd-types", "sparse-chat", "not-a-block"])
@pytest.mark.parametrize("model", ["o4-mini", "a-model-without-a-price"])
def test_an_answers_usage_of_any_shape_is_counts_of_zero_or_more_priced_when_its_model_is(usage: object,
                                                                                          model: str) -> None:
    read = answer_usage({"usage": usage}, model, PRICES, 0.5)
    if not isinstance(usage, dict):
        assert read is None  # no usage block: none reported
        return
    assert read is not None and read.model == model
    counts = (read.input_tokens, read.cached_input_tokens, read.output_tokens, read.reasoning_tokens)
    assert all(isinstance(count, int) and count >= 0 for count in counts)
    assert (read.estimated_cost_usd is None) == (model not in PRICES)
    assert answer_usage({"output": []}, model, PRICES) is None


def test_a_jobs_usage_sums_its_lots_per_model_and_in_all() -> None:
    vision = Usage(input_tokens=100, output_tokens=10, reasoning_tokens=4, estimated_cost_usd=0.5,
                   model="o4-mini")
    words = Usage(input_tokens=50, cached_input_tokens=20, output_tokens=30, estimated_cost_usd=0.25,
                  model="gpt-4.1-mini")
    job = JobUsage.of([vision, vision, words])
    counts = (job.input_tokens, job.cached_input_tokens, job.output_tokens, job.reasoning_tokens)
    assert counts == (250, 20, 50, 8)
    assert job.estimated_cost_usd == pytest.approx(1.25)
    assert job.by_model["o4-mini"].input_tokens == 200 and job.by_model["gpt-4.1-mini"].output_tokens == 30
    assert total([vision, Usage(input_tokens=1)]).estimated_cost_usd is None  # one unpriced part
    # The model is the block's key: a `"model": null` inside it would only confuse readers.
    assert all("model" not in block for block in job.model_dump()["by_model"].values())


def test_the_batch_discount_applies_in_batch_mode_only() -> None:
    assert ServiceSettings(openai=OpenAISettings(mode="batch")).billed_share() == 0.5
    assert ServiceSettings(openai=OpenAISettings(mode="direct")).billed_share() == 1.0


def answer(text: str) -> dict[str, object]:
    return {"status": "completed", "usage": RESPONSES_USAGE, "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}]}


async def _all_reachable(urls: object) -> ImageCheck:
    return ImageCheck(valid=(), unreachable=())


def test_the_completion_events_carry_the_answers_usage_priced_for_the_stage() -> None:
    models = ModelSettings()
    seen = LotWork("job", "lot", "client", 1, 1, VisionWork(additional_info="Camry", image_urls=("u1",),
                                                           languages=("en", "de")))
    read = LotWork("job", "lot", "client", 1, 1, TranslationWork(english_html="<p>Dent.</p>",
                                                                languages=("en", "de")))
    vision_stage = VisionStage("v", models, _all_reachable, billed_share=0.5)
    vision = vision_stage.result_event(seen, answer("<p>Dent.</p>"))
    expected = answer_usage(answer(""), "o4-mini", models.prices, 0.5)
    assert isinstance(vision, VisionCompleted)
    assert vision.usage == expected and vision.usage is not None and vision.usage.estimated_cost_usd
    translated = TranslationStage("t", models).result_event(read, answer('{"de": "<p>Delle.</p>"}'))
    assert isinstance(translated, TranslationCompleted)
    assert translated.usage == answer_usage(answer(""), "gpt-4.1-mini", models.prices)
