"""Real-shaped Responses and Chat Completions objects built from the deterministic rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson

from lotlens_openai_standin.answer_rules import (
    UNFETCHABLE_IMAGE_MARKER,
    LanguageFaults,
    Prompt,
    Written,
    answer_text,
    chat_prompt,
    estimate_tokens,
    responses_prompt,
    write_within,
)
from lotlens_openai_standin.api_errors import bad_request, server_error
from lotlens_openai_standin.ids import new_token, unix_now
from lotlens_openai_standin.models import is_reasoning_model, model_facts
from lotlens_openai_standin.parameter_checks import check_image_support, output_limit_name
from lotlens_openai_standin.request_checks import (
    check_chat_line,
    check_chat_request,
    check_responses_line,
    check_responses_request,
)
from lotlens_openai_standin.response_plan import Answered, ResponsesPlan, encoded_line
from lotlens_openai_standin.shapes import BatchShapes, asked_digest, shape_of

RESPONSES_ENDPOINT = "/v1/responses"
CHAT_ENDPOINT = "/v1/chat/completions"
ENDPOINTS = (RESPONSES_ENDPOINT, CHAT_ENDPOINT)


def chat_object(body: Mapping[str, Any], prompt: Prompt, faults: LanguageFaults | None = None
                ) -> dict[str, Any]:
    """A `chat.completion` object as `POST /v1/chat/completions` returns it."""
    model = str(body["model"])
    limit_name = output_limit_name(body, chat=True)
    written = write_within(answer_text(prompt, faults), is_reasoning_model(model),
                           body[limit_name] if limit_name else None)
    if prompt.wants_incomplete:
        written = Written("", False, written.reasoning_tokens, written.reasoning_tokens)
    text, finish = written.text, "stop" if written.finished else "length"
    input_tokens = estimate_tokens(len(orjson.dumps(body)), prompt.image_count)
    output_tokens, reasoning_tokens = written.output_tokens, written.reasoning_tokens
    return {
        "id": new_token("chatcmpl-", 29), "object": "chat.completion", "created": unix_now(), "model": model,
        "choices": [{
            "index": 0, "finish_reason": finish, "logprobs": None,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
        }],
        "usage": {
            "prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default", "system_fingerprint": "fp_standin",
    }


def _no_language_faults() -> LanguageFaults:
    return {}


def answer_json(endpoint: str, body: Mapping[str, Any],
                language_faults: Callable[[], LanguageFaults] = _no_language_faults,
                shapes: BatchShapes | None = None, custom_id: str = "") -> Answered:
    """Validate a request for `endpoint` and answer it, the response body encoded; raises ApiError
    (400/500). `language_faults` is asked, for a structured (translation) answer only, which
    languages to answer wrongly and how (the faults `untranslated_language`,
    `other_variant_language`). `shapes`: the request is a line of a batch (`custom_id` its own),
    answered with its whole line of the output file; what the bodies of the batch answered so far
    share (`shapes.py`), added to."""
    chat = endpoint != RESPONSES_ENDPOINT
    shape = b"" if shapes is None else shape_of(body, chat)
    passed, plan = (False, None) if shapes is None else shapes.lookup(shape)
    if chat:
        model = check_chat_line(body) if passed else check_chat_request(body)
        prompt = chat_prompt(body)
    else:
        if plan is None:
            model, read = check_responses_request(body)
            plan = ResponsesPlan(body, model, lines=shapes is not None, shape=shape)
        else:
            model, read = plan.model, check_responses_line(body, plan.facts)
        prompt = responses_prompt(read, plan.schema)
    if shapes is not None and not passed:
        shapes.add(shape, plan)
    check_image_support(model_facts(model) if plan is None else plan.facts, prompt.image_count, chat=chat)
    _refuse_by_marker(prompt)
    faults = language_faults() if prompt.schema is not None else None
    if plan is not None:
        return plan.answer(body, prompt, faults, custom_id)
    response = chat_object(body, prompt, faults)
    encoded = orjson.dumps(response)
    if shapes is not None:
        encoded = encoded_line(custom_id, 200, encoded)
    whole = response["choices"][0]["finish_reason"] == "stop"
    return Answered(encoded, usage_tokens(response), whole, asked_digest(body))


def answer(endpoint: str, body: Mapping[str, Any],
           language_faults: Callable[[], LanguageFaults] = _no_language_faults) -> dict[str, Any]:
    """The response body `answer_json` gives a direct call, decoded."""
    return cast(dict[str, Any], orjson.loads(answer_json(endpoint, body, language_faults).body))


# An image URL holding this is one "OpenAI" fetched but cannot read (a truncated JPEG, say): the
# request is refused as the real API refuses it, 400 `invalid_image_format` naming neither the
# image nor its place (`param` null).
UNSUPPORTED_IMAGE_MARKER = "standin-unsupported"
UNSUPPORTED_IMAGE_MESSAGE = ("You uploaded an unsupported image. Please make sure your image has of one "
                             "the following formats: ['png', 'jpeg', 'gif', 'webp'].")


def _refuse_by_marker(prompt: Prompt) -> None:
    # One look at the URLs joined (no marker holds a newline, so none spans two of them) instead of
    # a walk over them for each marker: a vision line's five URLs, nearly always without either.
    urls = "\n".join(prompt.image_urls)
    if UNFETCHABLE_IMAGE_MARKER in urls:
        raise bad_request(f"Error while downloading {prompt.unfetchable_image}.", param="url",
                          code="invalid_image_url")
    if UNSUPPORTED_IMAGE_MARKER in urls:
        raise bad_request(UNSUPPORTED_IMAGE_MESSAGE, code="invalid_image_format")
    if prompt.wants_error:
        raise server_error()


def usage_tokens(response: Mapping[str, Any]) -> tuple[int, int, int]:
    """(input, output, reasoning) tokens of a Responses or Chat body, for the batch's usage totals."""
    usage = response.get("usage") or {}
    if "input_tokens" in usage:
        details = usage.get("output_tokens_details") or {}
        return (int(usage["input_tokens"]), int(usage["output_tokens"]),
                int(details.get("reasoning_tokens", 0)))
    details = usage.get("completion_tokens_details") or {}
    return (int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
            int(details.get("reasoning_tokens", 0)))
