"""Real-shaped Responses and Chat Completions objects built from the deterministic rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lotlens_openai_standin.answer_rules import (
    Prompt,
    answer_text,
    chat_prompt,
    estimate_tokens,
    responses_prompt,
)
from lotlens_openai_standin.api_errors import server_error
from lotlens_openai_standin.ids import new_id, unix_now
from lotlens_openai_standin.request_checks import (
    check_chat_request,
    check_responses_request,
    is_reasoning_model,
)

RESPONSES_ENDPOINT = "/v1/responses"
CHAT_ENDPOINT = "/v1/chat/completions"
ENDPOINTS = (RESPONSES_ENDPOINT, CHAT_ENDPOINT)
# A fixed amount of "thinking" so usage looks like a reasoning model's.
REASONING_TOKENS = 64


def _output_tokens(text: str, model: str) -> tuple[int, int]:
    reasoning = REASONING_TOKENS if is_reasoning_model(model) else 0
    return len(text) // 4 + 1 + reasoning, reasoning


def _text_config(body: Mapping[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        return {"format": text["format"], "verbosity": text.get("verbosity", "medium")}
    return {"format": {"type": "text"}, "verbosity": "medium"}


def responses_object(body: Mapping[str, Any], prompt: Prompt) -> dict[str, Any]:
    """A `response` object as `POST /v1/responses` returns it (no `output_text`: the SDK derives it)."""
    model = str(body["model"])
    reasoning_model = is_reasoning_model(model)
    output: list[dict[str, Any]] = []
    if reasoning_model:
        output.append({"id": new_id("rs_", 48), "type": "reasoning", "summary": []})
    text = answer_text(prompt)
    status, incomplete = "completed", None
    if prompt.wants_incomplete:
        # The model spent its whole budget thinking: no message item at all.
        status, incomplete, text = "incomplete", {"reason": "max_output_tokens"}, ""
    else:
        output.append({
            "id": new_id("msg_", 48), "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        })
    input_tokens = estimate_tokens(body, prompt.image_count)
    output_tokens, reasoning_tokens = _output_tokens(text, model)
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": new_id("resp_", 48), "object": "response", "created_at": unix_now(), "status": status,
        "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": ({"effort": (reasoning or {}).get("effort", "medium"), "summary": None}
                      if reasoning_model else {"effort": None, "summary": None}),
        "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
        "temperature": None if reasoning_model else body.get("temperature", 1.0),
        "text": _text_config(body), "tool_choice": "auto", "tools": [], "top_logprobs": 0,
        "top_p": None if reasoning_model else body.get("top_p", 1.0), "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None, "metadata": body.get("metadata") or {},
    }


def chat_object(body: Mapping[str, Any], prompt: Prompt) -> dict[str, Any]:
    """A `chat.completion` object as `POST /v1/chat/completions` returns it."""
    model = str(body["model"])
    text, finish = answer_text(prompt), "stop"
    if prompt.wants_incomplete:
        text, finish = "", "length"
    input_tokens = estimate_tokens(body, prompt.image_count)
    output_tokens, reasoning_tokens = _output_tokens(text, model)
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


def answer(endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a request for `endpoint` and return the response body; raises ApiError (400/500)."""
    if endpoint == RESPONSES_ENDPOINT:
        check_responses_request(body)
        prompt = responses_prompt(body)
        if prompt.wants_error:
            raise server_error()
        return responses_object(body, prompt)
    check_chat_request(body)
    prompt = chat_prompt(body)
    if prompt.wants_error:
        raise server_error()
    return chat_object(body, prompt)


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
