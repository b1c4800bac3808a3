"""Validation of a batch input file, line by line, as a batch leaves `validating`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lotlens_openai_standin.answer_rules import estimate_tokens
from lotlens_openai_standin.answers import RESPONSES_ENDPOINT
from lotlens_openai_standin.files import BATCH_FILE_LIMIT, LINE_BUFFER
from lotlens_openai_standin.image_costs import image_details, images_tokens

MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = BATCH_FILE_LIMIT
# OpenAI reports a bounded list of problems, not one per bad line of a 50,000-line file.
MAX_REPORTED_ERRORS = 100


def batch_error(code: str, message: str, *, param: str | None = None,
                line: int | None = None) -> dict[str, Any]:
    """One entry of a failed batch's `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


@dataclass
class InputSummary:
    """What validation learned: the problems, or the request count, model and token estimate."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    model: str | None = None
    # None: not counted (see `validate_input_file`).
    estimated_tokens: int | None = 0
    # Each request's custom_id: what the batch will be paid for (`GET /_standin/batches/{id}/requests`).
    custom_ids: list[str] = field(default_factory=list)


def _line_errors(obj: object, endpoint: str, line: int, seen: set[str], summary: InputSummary) -> list[
        dict[str, Any]]:
    if not isinstance(obj, dict):
        return [batch_error("invalid_json_line", "This line is not a JSON object.", line=line)]
    errors: list[dict[str, Any]] = []
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        errors.append(batch_error("missing_required_parameter", "Missing required parameter: 'custom_id'.",
                                  param="custom_id", line=line))
    elif custom_id in seen:
        errors.append(batch_error(
            "duplicate_custom_id", "The custom_id for this request is a duplicate of another request. "
            "The custom_id parameter must be unique for each request in a batch.",
            param="custom_id", line=line))
    else:
        seen.add(custom_id)
    if obj.get("method") != "POST":
        errors.append(batch_error("invalid_value", f"Invalid value: '{obj.get('method')}'. Supported values "
                                  "are: 'POST'.", param="method", line=line))
    if obj.get("url") != endpoint:
        message = (f"The URL provided for this request ('{obj.get('url')}') does not match the batch "
                   f"endpoint ('{endpoint}').")
        errors.append(batch_error("invalid_url", message, param="url", line=line))
    body = obj.get("body")
    if not isinstance(body, dict):
        errors.append(batch_error("missing_required_parameter", "Missing required parameter: 'body'.",
                                  param="body", line=line))
        return errors
    errors.extend(_body_errors(body, endpoint, line, summary))
    return errors


def _body_errors(body: Mapping[str, Any], endpoint: str, line: int, summary: InputSummary) -> list[
        dict[str, Any]]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return [batch_error("missing_required_parameter", "Missing required parameter: 'body.model'.",
                            param="body.model", line=line)]
    if summary.model is None:
        summary.model = model
    elif model != summary.model:
        message = (f"The model for this request ('{model}') does not match the model of the other requests "
                   f"in this batch ('{summary.model}'). Each batch input file can only include requests to "
                   "a single model.")
        return [batch_error("mismatched_model", message, param="body.model", line=line)]
    # The request itself (its input, its parameters) is checked when it runs, like OpenAI does: a bad
    # one gets its 400 in the error file and the rest of the batch goes on.
    if summary.estimated_tokens is not None:
        details = tuple(image_details(body, chat=endpoint != RESPONSES_ENDPOINT))
        tokens = estimate_tokens(len(orjson.dumps(body)), 0) + images_tokens(model, details)
        summary.estimated_tokens += tokens
    return []


def validate_input_file(path: Path, endpoint: str, count_tokens: bool = True) -> InputSummary:
    """Read the input file once, line by line, collecting problems like OpenAI's validator.
    `count_tokens`: estimate the batch's enqueued tokens, which only an enqueued-token limit reads
    (the estimate encodes each body again and walks its images: 2 us of a vision line's 6)."""
    summary = InputSummary(estimated_tokens=0 if count_tokens else None)
    if path.stat().st_size > MAX_INPUT_BYTES:
        summary.errors.append(batch_error("file_too_large", "The batch input file is larger than the 200 MB "
                                          "maximum.", param="input_file_id"))
        return summary
    seen: set[str] = set()
    with path.open("rb", buffering=LINE_BUFFER) as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            summary.total += 1
            if summary.total > MAX_REQUESTS:
                summary.errors.append(batch_error(
                    "too_many_requests", f"The batch input file contains more than the maximum of "
                    f"{MAX_REQUESTS:,} requests.", param="input_file_id"))
                break
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                summary.errors.append(batch_error("invalid_json_line", "This line is not parseable as valid "
                                                  "JSON.", line=number))
            else:
                summary.errors.extend(_line_errors(obj, endpoint, number, seen, summary))
            if len(summary.errors) >= MAX_REPORTED_ERRORS:
                break
    summary.custom_ids = sorted(seen)
    if summary.total == 0 and not summary.errors:
        summary.errors.append(batch_error("empty_file", "The batch input file is empty.",
                                          param="input_file_id"))
    return summary
