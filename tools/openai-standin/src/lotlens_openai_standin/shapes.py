"""What the lines of one batch share, worked out once per slice rather than once per line.

LotLens writes the lines of a batch from one template: they differ in the lot's input and in the
output cap sized to it, nothing else. The rest of a body, its shape, is checked and turned into the
fixed part of its answers once per distinct value; a slice of 50,000 lines has one or a few.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from lotlens_openai_standin.response_plan import ResponsesPlan

# By endpoint (chat or not): the fields a line has of its own. The checks of these run for every
# line (`request_checks.py`); no other check and no fixed field of an answer reads them.
PER_LINE_FIELDS = {False: ("input", "max_output_tokens"), True: ("messages", "max_completion_tokens")}


def shape_of(body: Mapping[str, Any], chat: bool) -> bytes:
    """The body but its per-line fields, as JSON: equal shapes hold equal values in every other field
    (orjson writes 1, 1.0 and true apart, where == takes them for equal)."""
    shared = dict(body)
    for name in PER_LINE_FIELDS[chat]:
        shared.pop(name, None)
    return orjson.dumps(shared)


@dataclass
class BatchShapes:
    """The shapes one slice of a batch met, of bodies that passed every check: a Responses shape's
    plan of its answers (`response_plan.py`), None for a Chat Completions shape."""

    passed: dict[bytes, ResponsesPlan | None] = field(default_factory=dict)
    # The shape met last, and its plan: a batch's lines come in runs of one shape, and comparing a
    # vision line's 1.3 kB shape with the last one took a tenth of the time of hashing it again.
    last: tuple[bytes, ResponsesPlan | None] | None = None

    def lookup(self, shape: bytes) -> tuple[bool, ResponsesPlan | None]:
        """Whether a body of this shape passed every check, and the shape's plan."""
        if self.last is None or self.last[0] != shape:
            if shape not in self.passed:
                return False, None
            self.last = shape, self.passed[shape]
        return True, self.last[1]

    def add(self, shape: bytes, plan: ResponsesPlan | None) -> None:
        """A body of this shape passed every check."""
        self.passed[shape] = plan
        self.last = shape, plan


# Every line of a batch asks for the same output (vision: none; translation: one schema per part).
@lru_cache(maxsize=256)
def _digest(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()[:16]


def asked_digest(body: Mapping[str, Any]) -> str:
    """A digest of the structured output a body asks for (a translation's languages), kept with each
    line's answer (`batch_run.line_answer`): the next part of a lot's languages is not the same
    request."""
    asked_for = body.get("text") or body.get("response_format") or {}
    fmt = asked_for.get("format", asked_for) if isinstance(asked_for, dict) else {}
    return _digest(orjson.dumps(fmt, option=orjson.OPT_SORT_KEYS))
