"""Real-shaped Responses and Chat Completions objects built from the deterministic rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from lotlens_openai_standin.answer_rules import (
    UNFETCHABLE_IMAGE_MARKER,
    LanguageFaults,
    Prompt,
    answer_text,
    chat_prompt,
    estimate_tokens,
    responses_prompt,
)
from lotlens_openai_standin.api_errors import bad_request, server_error
from lotlens_openai_standin.ids import new_id, unix_now
from lotlens_openai_standin.models import is_reasoning_model
from lotlens_openai_standin.parameter_checks import check_image_support, output_limit_name
from lotlens_openai_standin.request_checks import check_chat_request, check_responses_request
from lotlens_openai_standin.shapes import BatchShapes, shape_of

RESPONSES_ENDPOINT = "/v1/responses"
CHAT_ENDPOINT = "/v1/chat/completions"
ENDPOINTS = (RESPONSES_ENDPOINT, CHAT_ENDPOINT)
# A fixed amount of "thinking" so usage looks like a reasoning model's.
REASONING_TOKENS = 64


def _output_tokens(text: str, model: str) -> tuple[int, int]:
    reasoning = REASONING_TOKENS if is_reasoning_model(model) else 0
    return len(text) // 4 + 1 + reasoning, reasoning


class Written(NamedTuple):
    """What the model writes within its output-token cap (a tuple: made for every line, a frozen
    dataclass took 0.5 us to make, a tuple half that)."""

    text: str
    # False: the cap was reached (nothing at all when the thinking alone used it up).
    finished: bool
    output_tokens: int
    reasoning_tokens: int


def write_within(text: str, model: str, limit: object) -> Written:
    """The answer cut at the cap (4 characters a token, like the estimate), as OpenAI stops at it."""
    tokens, reasoning = _output_tokens(text, model)
    if not isinstance(limit, int) or tokens <= limit:
        return Written(text, True, tokens, reasoning)
    if reasoning >= limit:
        return Written("", False, limit, limit)
    return Written(text[:(limit - reasoning - 1) * 4], False, limit, reasoning)


def _text_config(body: Mapping[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        return {"format": text["format"], "verbosity": text.get("verbosity", "medium")}
    return {"format": {"type": "text"}, "verbosity": "medium"}


def response_head(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a `response` object that follow from the body's shape (`shapes.py`), in the
    object's order; those each answer has of its own are None here, for `responses_object` to fill."""
    model = str(body["model"])
    reasoning_model = is_reasoning_model(model)
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": None, "object": "response", "created_at": None, "status": None,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": None,
        "max_tool_calls": None, "model": model, "output": None, "parallel_tool_calls": True,
        "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": ({"effort": (reasoning or {}).get("effort", "medium"), "summary": None}
                      if reasoning_model else {"effort": None, "summary": None}),
        "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
        "temperature": None if reasoning_model else body.get("temperature", 1.0),
        "text": _text_config(body), "tool_choice": "auto", "tools": [], "top_logprobs": 0,
        "top_p": None if reasoning_model else body.get("top_p", 1.0), "truncation": "disabled",
        "usage": None, "user": None, "metadata": body.get("metadata") or {},
    }


def responses_object(body: Mapping[str, Any], prompt: Prompt, faults: LanguageFaults | None = None,
                     head: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A `response` object as `POST /v1/responses` returns it (no `output_text`: the SDK derives it).
    `head`: the body's `response_head`, when one is at hand (a batch's lines share it); its values
    are shared, not copied, so the object is for serialising, not for changing."""
    response = dict(response_head(body) if head is None else head)
    model = response["model"]
    output: list[dict[str, Any]] = []
    if is_reasoning_model(model):
        output.append({"id": new_id("rs_", 48), "type": "reasoning", "summary": []})
    written = write_within(answer_text(prompt, faults), model, body.get("max_output_tokens"))
    if prompt.wants_incomplete:
        # The model spent its whole budget thinking: no message item at all.
        written = Written("", False, written.reasoning_tokens, written.reasoning_tokens)
    status, incomplete = "completed", None
    if not written.finished:
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    if written.text:
        output.append({
            "id": new_id("msg_", 48), "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": written.text, "annotations": [], "logprobs": []}],
        })
    input_tokens = estimate_tokens(body, prompt.image_count)
    output_tokens, reasoning_tokens = written.output_tokens, written.reasoning_tokens
    # Assigned to the head's keys, which keep their places: the object's field order is the head's.
    response["id"], response["created_at"], response["status"] = new_id("resp_", 48), unix_now(), status
    response["incomplete_details"], response["max_output_tokens"] = incomplete, body.get("max_output_tokens")
    response["output"] = output
    response["usage"] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }
    return response


def chat_object(body: Mapping[str, Any], prompt: Prompt, faults: LanguageFaults | None = None
                ) -> dict[str, Any]:
    """A `chat.completion` object as `POST /v1/chat/completions` returns it."""
    model = str(body["model"])
    limit_name = output_limit_name(body, chat=True)
    written = write_within(answer_text(prompt, faults), model,
                           body[limit_name] if limit_name else None)
    if prompt.wants_incomplete:
        written = Written("", False, written.reasoning_tokens, written.reasoning_tokens)
    text, finish = written.text, "stop" if written.finished else "length"
    input_tokens = estimate_tokens(body, prompt.image_count)
    output_tokens, reasoning_tokens = written.output_tokens, written.reasoning_tokens
    return {
        "id": new_id("chatcmpl-", 28), "object": "chat.completion", "created": unix_now(), "model": model,
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


def answer(endpoint: str, body: Mapping[str, Any],
           language_faults: Callable[[], LanguageFaults] = _no_language_faults,
           shapes: BatchShapes | None = None) -> dict[str, Any]:
    """Validate a request for `endpoint` and return the response body; raises ApiError (400/500).
    `language_faults` is asked, for a structured (translation) answer only, which languages to
    answer wrongly and how (the faults `untranslated_language`, `other_variant_language`);
    `shapes`: what the bodies of the batch answered so far share (`shapes.py`), added to."""
    chat = endpoint != RESPONSES_ENDPOINT
    shape = b"" if shapes is None else shape_of(body, chat)
    passed = shapes is not None and shape in shapes.checked
    model = check_chat_request(body, passed) if chat else check_responses_request(body, passed)
    if shapes is not None:
        shapes.checked.add(shape)
    prompt = chat_prompt(body) if chat else responses_prompt(body)
    check_image_support(model, prompt.image_count, chat=chat)
    _refuse_by_marker(prompt)
    faults = language_faults() if prompt.schema is not None else None
    if chat:
        return chat_object(body, prompt, faults)
    if shapes is None:
        return responses_object(body, prompt, faults)
    head = shapes.heads.get(shape)
    if head is None:
        head = shapes.heads[shape] = response_head(body)
    return responses_object(body, prompt, faults, head)


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
