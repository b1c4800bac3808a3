"""Running a validated batch a slice at a time, appending to its output and error files.

A batch runs while `in_progress`: each slice answers the next requests of the input file, in a
shuffled order (OpenAI does not keep input order), and the progress (lines done, bytes of input
read, bytes written to each result file) is what the batch record keeps. Resuming after a restart
cuts both result files back to the recorded sizes, so no line is written twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lotlens_openai_standin.answer_rules import LanguageFaults
from lotlens_openai_standin.answers import answer_json
from lotlens_openai_standin.api_errors import ApiError, server_error
from lotlens_openai_standin.files import LINE_BUFFER
from lotlens_openai_standin.ids import new_id
from lotlens_openai_standin.response_plan import encoded_line
from lotlens_openai_standin.shapes import BatchShapes, asked_digest

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


def line_answer(status: int, usable: bool, asked: str, tokens: tuple[int, int, int]) -> dict[str, Any]:
    """What one executed line cost and gave, kept per batch (`GET /_standin/batches/{id}/requests`):
    the chaos run tells a paid resend from a retry, and checks LotLens' usage against these tokens
    after the stage deleted the result files. `usable`: a 200 whose answer is whole and right (not
    cut at its cap, no injected language fault); `asked`: a digest of the structured output asked
    for (`shapes.asked_digest`)."""
    # A tuple of tokens: a batch's answers are held until the slice ends, and the collector passes
    # over dicts of numbers alone (a list made each of them one more object for every full
    # collection to visit).
    return {"status": status, "usable": usable, "asked": asked, "tokens": tokens}


def _lines_from(path: Path, offset: int) -> Iterator[tuple[bytes, int]]:
    """Each line from a byte offset on, with the offset after it. Read as the lines are answered: a
    slice of 50,000 lines read whole first was 90 MB more for the slice to take and give back."""
    with path.open("rb", buffering=LINE_BUFFER) as source:
        source.seek(offset)
        for raw in source:
            offset += len(raw)
            yield raw, offset


def _append(path: Path, size: int, chunk: list[bytes]) -> int:
    # Line by line through a large buffer: joined first, a slice's output was copied whole again.
    with path.open("ab", buffering=LINE_BUFFER) as out:
        # Anything past the recorded size was written by a run a kill interrupted.
        out.truncate(size)
        out.writelines(chunk)
    return size + sum(map(len, chunk))


def run_slice(input_path: Path, state: RunState, count: int, endpoint: str, fail_substring: str | None,
              seed: str, language_faults: Callable[[], LanguageFaults]) -> dict[str, dict[str, Any]]:
    """Answer the next `count` requests into the result files, in a shuffled order
    (`language_faults`: the language faults of each translation answered); each one's `line_answer`
    by custom_id."""
    outputs: list[bytes] = []
    errors: list[bytes] = []
    answered: dict[str, dict[str, Any]] = {}
    taken: list[LanguageFaults] = []

    def faults_taken() -> LanguageFaults:
        taken.append(language_faults())
        return taken[-1]

    shapes = BatchShapes()  # a slice's at most: nothing of it outlives the slice
    executed, offset = 0, state.input_offset
    # Summed here and added to the state once the slice is done, not a new list of three for each
    # line answered (100,000 a job).
    completed = failed = input_tokens = output_tokens = reasoning_tokens = 0
    for raw, after in _lines_from(input_path, offset):
        if executed == count:
            break
        offset = after
        if not raw.strip():
            continue
        executed += 1
        request = orjson.loads(raw)
        custom_id = str(request["custom_id"])
        before = len(taken)
        try:
            if fail_substring and fail_substring in custom_id:
                raise server_error()
            answer = answer_json(endpoint, request["body"], faults_taken, shapes, custom_id)
        except ApiError as exc:
            answered[custom_id] = line_answer(exc.status, False, asked_digest(request["body"]), (0, 0, 0))
            errors.append(encoded_line(custom_id, exc.status, orjson.dumps(exc.body())))
            failed += 1
            continue
        usable = answer.whole and not any(taken[before:])
        answered[custom_id] = line_answer(200, usable, answer.asked, answer.tokens)
        outputs.append(answer.body)
        completed += 1
        spent = answer.tokens
        input_tokens, output_tokens = input_tokens + spent[0], output_tokens + spent[1]
        reasoning_tokens += spent[2]
    shuffle = random.Random(f"{seed}:{state.executed}").shuffle
    shuffle(outputs)
    shuffle(errors)
    state.output_bytes = _append(Path(state.output_path), state.output_bytes, outputs)
    state.error_bytes = _append(Path(state.error_path), state.error_bytes, errors)
    state.executed += executed
    state.input_offset = offset
    state.completed, state.failed = state.completed + completed, state.failed + failed
    state.tokens = [a + b for a, b in zip(state.tokens, (input_tokens, output_tokens, reasoning_tokens),
                                          strict=True)]
    return answered


def write_unexecuted(input_path: Path, state: RunState, code: str) -> int:
    """Report every request not yet run in the error file with `code`; how many there were."""
    error = {"code": code, "message": UNEXECUTED_MESSAGES[code]}
    lines: list[bytes] = []
    offset = state.input_offset
    for raw, after in _lines_from(input_path, offset):
        offset = after
        if raw.strip():
            custom_id = orjson.loads(raw)["custom_id"]
            line = {"id": new_id("batch_req_", 32), "custom_id": custom_id, "response": None, "error": error}
            lines.append(orjson.dumps(line) + b"\n")
    state.error_bytes = _append(Path(state.error_path), state.error_bytes, lines)
    state.input_offset = offset
    return len(lines)
