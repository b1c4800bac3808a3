"""Running a validated batch: one output or error line per input line, streamed file to file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from lotlens_openai_standin.answers import answer, usage_tokens
from lotlens_openai_standin.api_errors import ApiError, server_error
from lotlens_openai_standin.ids import new_id

UNEXECUTED_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass(frozen=True)
class RunPlan:
    """How much of the file runs and what happens to the rest."""

    endpoint: str
    # Lines from this index on are not executed (expired or cancelled batches); None runs them all.
    executed_limit: int | None = None
    unexecuted_code: str = "batch_expired"
    fail_custom_ids_containing: str | None = None


@dataclass
class RunResult:
    """Counts and token totals of one run."""

    completed: int = 0
    failed: int = 0
    unexecuted: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def _write(out: IO[bytes], line: Mapping[str, Any]) -> None:
    out.write(orjson.dumps(line) + b"\n")


def _response_line(custom_id: str, status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    response = {"status_code": status, "request_id": new_id("req_", 32), "body": body}
    return {"id": new_id("batch_req_", 32), "custom_id": custom_id, "response": response, "error": None}


def _execute(request: Mapping[str, Any], plan: RunPlan) -> tuple[int, dict[str, Any]]:
    custom_id = str(request["custom_id"])
    substring = plan.fail_custom_ids_containing
    try:
        if substring and substring in custom_id:
            raise server_error()
        return 200, answer(plan.endpoint, request["body"])
    except ApiError as exc:
        return exc.status, exc.body()


def run_batch(input_path: Path, plan: RunPlan, output_path: Path, error_path: Path) -> RunResult:
    """Answer every line of a validated input file into the output and error files."""
    result = RunResult()
    with input_path.open("rb") as lines, output_path.open("wb") as output, error_path.open("wb") as errors:
        index = 0
        for raw in lines:
            if not raw.strip():
                continue
            request = orjson.loads(raw)
            custom_id = str(request["custom_id"])
            if plan.executed_limit is not None and index >= plan.executed_limit:
                code = plan.unexecuted_code
                _write(errors, {"id": new_id("batch_req_", 32), "custom_id": custom_id, "response": None,
                                "error": {"code": code, "message": UNEXECUTED_MESSAGES[code]}})
                result.unexecuted += 1
            else:
                status, body = _execute(request, plan)
                _write(output if status == 200 else errors, _response_line(custom_id, status, body))
                if status == 200:
                    result.completed += 1
                    tokens = usage_tokens(body)
                    result.input_tokens += tokens[0]
                    result.output_tokens += tokens[1]
                    result.reasoning_tokens += tokens[2]
                else:
                    result.failed += 1
            index += 1
    return result
