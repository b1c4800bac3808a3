"""Model choices and generation limits, embedded in every service's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lotlens_common.model.usage import ModelPrice

# OpenAI's list prices (USD per million tokens) when this was written; a deployment sets its own
# with `LOTLENS_MODELS__PRICES='{"model": {"input": …, "cached_input": …, "output": …}}'`.
DEFAULT_PRICES = {
    "o4-mini": ModelPrice(input=1.10, cached_input=0.275, output=4.40),
    "gpt-4.1-mini": ModelPrice(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4o-mini": ModelPrice(input=0.15, cached_input=0.075, output=0.60),
}


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 models reason: they take `reasoning`, and refuse `temperature`."""
    return model.startswith("o") or model.startswith("gpt-5")


class ModelSettings(BaseModel):
    """Which models describe and translate, and how much they may write."""

    model_config = ConfigDict(frozen=True)

    vision_model: str = "o4-mini"
    translation_model: str = "gpt-4.1-mini"
    image_detail: Literal["low", "high", "auto"] = "auto"
    vision_max_output_tokens: int = 4000
    # The ceiling of a translation's output budget, which grows with the languages and the text
    # (`model.translation.translation_output_budget`): gpt-4.1-mini's largest output.
    translation_max_output_tokens: int = 32_768
    # Only sent to reasoning models; the API rejects it for the others.
    reasoning_effort: Literal["low", "medium", "high"] | None = "low"
    # Only sent to non-reasoning models; reasoning models reject it.
    temperature: float | None = None
    # The estimated cost of each answer: prices per model, and the share the Batch API bills.
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    batch_discount: float = 0.5


def sampling_options(model: str, settings: ModelSettings) -> dict[str, object]:
    """`reasoning` for reasoning models, `temperature` for the others, nothing when unset."""
    if is_reasoning_model(model):
        return {"reasoning": {"effort": settings.reasoning_effort}} if settings.reasoning_effort else {}
    return {"temperature": settings.temperature} if settings.temperature is not None else {}
