"""What the stand-in knows about each model, taken from OpenAI's documentation, not from LotLens' code.

Source: the model pages of the OpenAI platform documentation (platform.openai.com/docs/models/<id>:
"Reasoning" models, the "Modalities" box for image input, "Max output tokens") and the reasoning
guide (reasoning models refuse `temperature` and `top_p`). Dated snapshots (`o4-mini-2025-04-16`)
share their family's facts. A model missing here is unknown: the API answers `model_not_found`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ModelFacts:
    """One family: does it reason, does it see images, how many tokens may it write."""

    reasoning: bool
    images: bool
    max_output_tokens: int


MODELS: dict[str, ModelFacts] = {
    "gpt-5": ModelFacts(reasoning=True, images=True, max_output_tokens=128_000),
    "gpt-5-mini": ModelFacts(reasoning=True, images=True, max_output_tokens=128_000),
    "gpt-5-nano": ModelFacts(reasoning=True, images=True, max_output_tokens=128_000),
    "o4-mini": ModelFacts(reasoning=True, images=True, max_output_tokens=100_000),
    "o3": ModelFacts(reasoning=True, images=True, max_output_tokens=100_000),
    "o3-mini": ModelFacts(reasoning=True, images=False, max_output_tokens=100_000),
    "o1": ModelFacts(reasoning=True, images=True, max_output_tokens=100_000),
    "gpt-4.1": ModelFacts(reasoning=False, images=True, max_output_tokens=32_768),
    "gpt-4.1-mini": ModelFacts(reasoning=False, images=True, max_output_tokens=32_768),
    "gpt-4.1-nano": ModelFacts(reasoning=False, images=True, max_output_tokens=32_768),
    "gpt-4o": ModelFacts(reasoning=False, images=True, max_output_tokens=16_384),
    "gpt-4o-mini": ModelFacts(reasoning=False, images=True, max_output_tokens=16_384),
    "gpt-4-turbo": ModelFacts(reasoning=False, images=True, max_output_tokens=4_096),
    "gpt-3.5-turbo": ModelFacts(reasoning=False, images=False, max_output_tokens=4_096),
}


def model_facts(model: str) -> ModelFacts | None:
    """The facts of a model id or of its dated snapshot; None for a model OpenAI does not have."""
    return MODELS.get(model) or MODELS.get(_SNAPSHOT.sub("", model))


def is_reasoning_model(model: str) -> bool:
    """True for the reasoning families (they take `reasoning`, refuse `temperature`/`top_p`)."""
    facts = model_facts(model)
    return facts is not None and facts.reasoning
