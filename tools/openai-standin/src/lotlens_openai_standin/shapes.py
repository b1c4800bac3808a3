"""What the lines of one batch share, worked out once per slice rather than once per line.

LotLens writes the lines of a batch from one template: they differ in the lot's input and in the
output cap sized to it, nothing else. The rest of a body, its shape, is checked and turned into the
fixed fields of its answer once per distinct value; a slice of 50,000 lines has one or a few.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    """The shapes one slice of a batch met: those of bodies that passed every check, and the fixed
    fields of a `response` object each gives (`answers.response_head`)."""

    checked: set[bytes] = field(default_factory=set)
    heads: dict[bytes, dict[str, Any]] = field(default_factory=dict)
