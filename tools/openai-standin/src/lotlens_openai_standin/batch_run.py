"""Running a validated batch a slice at a time, appending to its output and error files.

A batch runs while `in_progress`: each slice answers the next requests of the input file, in a
shuffled order (OpenAI does not keep input order), and the progress (lines done, bytes of input
read, bytes written to each result file) is what the batch record keeps. Resuming after a restart
cuts both result files back to the recorded sizes, so no line is written twice.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lotlens_openai_standin.answer_rules import LanguageFaults
from lotlens_openai_standin.answers import answer, usage_tokens
from lotlens_openai_standin.api_errors import ApiError, server_error
from lotlens_openai_standin.files import LINE_BUFFER
from lotlens_openai_standin.ids import new_id

UNEXECUTED_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass
class RunState:
    """How far a batch has run: kept in the batch record, so it survives a restart."""

    output_path: str
    error_path: str
    executed: int = 0
    input_offset: int = 0
    output_bytes: int = 0
    error_bytes: int = 0
    completed: int = 0
    failed: int = 0
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0])  # input, output, reasoning


def _response_line(custom_id: str, status: int, body: Mapping[str, Any]) -> bytes:
    response = {"status_code": status, "request_id": new_id("req_", 32), "body": body}
    line = {"id": new_id("batch_req_", 32), "custom_id": custom_id, "response": response, "error": None}
    return orjson.dumps(line) + b"\n"


def line_answer(request: Mapping[str, Any], status: int, body: Mapping[str, Any], faulted: bool
                ) -> dict[str, Any]:
    """What one executed line cost and gave, kept per batch (`GET /_standin/batches/{id}/requests`):
    the chaos run tells a paid resend from a retry, and checks LotLens' usage against these tokens
    after the stage deleted the result files. `usable`: a 200 whose answer is whole and right (not
    cut at its cap, no injected language fault); `asked`: a digest of the structured output asked
    for (a translation's languages), so the next part of a lot's languages is not the same request."""
    asked_for = request["body"].get("text") or request["body"].get("response_format") or {}
    fmt = asked_for.get("format", asked_for) if isinstance(asked_for, dict) else {}
    asked = hashlib.sha256(orjson.dumps(fmt, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    choices = body.get("choices") or [{}]
    whole = body.get("status") == "completed" or choices[0].get("finish_reason") == "stop"
    tokens = list(usage_tokens(body)) if status == 200 else [0, 0, 0]
    return {"status": status, "usable": status == 200 and whole and not faulted, "asked": asked,
            "tokens": tokens}


def _execute(request: Mapping[str, Any], endpoint: str, fail_substring: str | None,
             language_faults: Callable[[], LanguageFaults]) -> tuple[int, dict[str, Any]]:
    try:
        if fail_substring and fail_substring in str(request["custom_id"]):
            raise server_error()
        return 200, answer(endpoint, request["body"], language_faults)
    except ApiError as exc:
        return exc.status, exc.body()


def _read_lines(path: Path, offset: int, count: int | None) -> tuple[list[bytes], int]:
    """Up to `count` non-blank lines from a byte offset (all when None), and the offset after them."""
    lines: list[bytes] = []
    with path.open("rb", buffering=LINE_BUFFER) as source:
        source.seek(offset)
        while count is None or len(lines) < count:
            raw = source.readline()
            if not raw:
                break
            offset += len(raw)
            if raw.strip():
                lines.append(raw)
    return lines, offset


def _append(path: Path, size: int, chunk: list[bytes]) -> int:
    with path.open("ab") as out:
        # Anything past the recorded size was written by a run a kill interrupted.
        out.truncate(size)
        out.write(b"".join(chunk))
    return size + sum(len(line) for line in chunk)


def run_slice(input_path: Path, state: RunState, count: int, endpoint: str, fail_substring: str | None,
              seed: str, language_faults: Callable[[], LanguageFaults]) -> dict[str, dict[str, Any]]:
    """Answer the next `count` requests into the result files, in a shuffled order
    (`language_faults`: the language faults of each translation answered); each one's `line_answer`
    by custom_id."""
    raws, offset = _read_lines(input_path, state.input_offset, count)
    outputs: list[bytes] = []
    errors: list[bytes] = []
    answered: dict[str, dict[str, Any]] = {}
    taken: list[LanguageFaults] = []

    def faults_taken() -> LanguageFaults:
        taken.append(language_faults())
        return taken[-1]

    for raw in raws:
        request = orjson.loads(raw)
        before = len(taken)
        status, body = _execute(request, endpoint, fail_substring, faults_taken)
        answered[str(request["custom_id"])] = line_answer(request, status, body, any(taken[before:]))
        (outputs if status == 200 else errors).append(_response_line(str(request["custom_id"]), status, body))
        if status == 200:
            state.completed += 1
            state.tokens = [a + b for a, b in zip(state.tokens, usage_tokens(body), strict=True)]
        else:
            state.failed += 1
    shuffle = random.Random(f"{seed}:{state.executed}").shuffle
    shuffle(outputs)
    shuffle(errors)
    state.output_bytes = _append(Path(state.output_path), state.output_bytes, outputs)
    state.error_bytes = _append(Path(state.error_path), state.error_bytes, errors)
    state.executed += len(raws)
    state.input_offset = offset
    return answered


def write_unexecuted(input_path: Path, state: RunState, code: str) -> int:
    """Report every request not yet run in the error file with `code`; how many there were."""
    raws, offset = _read_lines(input_path, state.input_offset, None)
    message = UNEXECUTED_MESSAGES[code]
    lines = [orjson.dumps({"id": new_id("batch_req_", 32), "custom_id": orjson.loads(raw)["custom_id"],
                           "response": None, "error": {"code": code, "message": message}}) + b"\n"
             for raw in raws]
    state.error_bytes = _append(Path(state.error_path), state.error_bytes, lines)
    state.input_offset = offset
    return len(lines)
