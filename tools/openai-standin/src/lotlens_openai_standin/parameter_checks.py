"""Per-model parameter rules of the two model endpoints, answered with OpenAI's error bodies.

The parameter names are the properties of `CreateResponse` and `CreateChatCompletionRequest` in
the OpenAI description (tests/unit/test_standin_models.py holds these sets to the derived subset in
tools/openai-standin/spec); the ranges are the API reference's (`temperature` 0–2, `top_p` 0–1,
`max_output_tokens` at least 16 and at most the model's maximum output).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lotlens_openai_standin.api_errors import ApiError, bad_request
from lotlens_openai_standin.models import ModelFacts, model_facts

RESPONSES_PARAMETERS = frozenset({
    "background", "context_management", "conversation", "include", "input", "instructions",
    "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options", "temperature",
    "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
})
CHAT_PARAMETERS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
})
# Chat Completions names that the Responses API renamed: OpenAI says where they went.
MOVED_ON_RESPONSES = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
MIN_OUTPUT_TOKENS = 16
RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}


def model_not_found(model: str, chat: bool) -> ApiError:
    """Chat Completions answers 404 for a model that does not exist; Responses answers 400."""
    if chat:
        return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                        param="model", code="model_not_found")
    return bad_request(f"The requested model '{model}' does not exist.", param="model",
                       code="model_not_found")


def known_model(model: str, chat: bool) -> ModelFacts:
    """The model's facts, or OpenAI's `model_not_found`."""
    facts = model_facts(model)
    if facts is None:
        raise model_not_found(model, chat)
    return facts


def check_parameter_names(body: Mapping[str, Any], chat: bool) -> None:
    """Every parameter is one the endpoint takes (OpenAI refuses unknown ones)."""
    known = CHAT_PARAMETERS if chat else RESPONSES_PARAMETERS
    for name in body:
        if name in known:
            continue
        moved = None if chat else MOVED_ON_RESPONSES.get(name)
        if moved:
            raise bad_request(f"Unsupported parameter: '{name}'. In the Responses API, this parameter has "
                              f"moved to '{moved}'. Try again with the new parameter. See the API "
                              "documentation for more information: "
                              "https://platform.openai.com/docs/api-reference/responses/create.",
                              param=name, code="unsupported_parameter")
        raise bad_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def _check_range(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"Invalid type for '{name}': expected a decimal, but got a value instead.",
                          param=name, code="invalid_type")
    low, high = RANGES[name]
    if value < low:
        raise bad_request(f"Invalid '{name}': decimal below minimum value. Expected a value >= {low:g}, "
                          f"but got {value:g} instead.", param=name, code="decimal_below_min_value")
    if value > high:
        raise bad_request(f"Invalid '{name}': decimal above maximum value. Expected a value <= {high:g}, "
                          f"but got {value:g} instead.", param=name, code="decimal_above_max_value")


def output_limit_name(body: Mapping[str, Any], chat: bool) -> str | None:
    """The parameter that caps the answer's length in this body, if one is set."""
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_output_tokens",)
    for name in names:
        if body.get(name) is not None:
            return name
    return None


def check_output_limit(body: Mapping[str, Any], chat: bool, facts: ModelFacts) -> None:
    """The output-token cap, if set, is an integer in OpenAI's range for the model."""
    name = output_limit_name(body, chat)
    if name is None:
        return
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"Invalid type for '{name}': expected an integer, but got a value instead.",
                          param=name, code="invalid_type")
    low = 1 if chat else MIN_OUTPUT_TOKENS
    if value < low:
        raise bad_request(f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
                          f"but got {value} instead.", param=name, code="integer_below_min_value")
    if value > facts.max_output_tokens:
        raise bad_request(f"{name} is too large: {value}. This model supports at most "
                          f"{facts.max_output_tokens} completion tokens, whereas you provided {value}.",
                          param=name, code="integer_above_max_value")


def check_parameter_values(body: Mapping[str, Any], chat: bool, facts: ModelFacts) -> None:
    """The output-token cap and the sampling values are in OpenAI's ranges."""
    check_output_limit(body, chat, facts)
    for name in RANGES:
        _check_range(body, name)


def check_image_support(facts: ModelFacts | None, image_count: int, chat: bool) -> None:
    """A text-only model (`facts` its facts) refuses image parts."""
    if image_count and facts is not None and not facts.images:
        part = "image_url" if chat else "input_image"
        raise bad_request(f"Invalid content type. {part} is only supported by certain models.",
                          param="messages" if chat else "input")
