"""A lot's usage goes into the statements' JSON document as its fields, written as pydantic writes it."""

from __future__ import annotations

import pytest

from lotlens_common.model.usage import Usage
from lotlens_common.row_sets import json_rows
from lotlens_result_store.usage import stored_usage


@pytest.mark.parametrize("usage", [
    Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=40,
          estimated_cost_usd=0.00123, model="gpt-4.1-mini"),
    Usage(input_tokens=7, output_tokens=1),  # unpriced, no model
])
def test_a_lots_usage_is_written_as_its_models_json(usage: Usage) -> None:
    # Each usage went through pydantic's `model_dump_json` (1.4 us), twice a lot: 0.15 CPU-s of a
    # 50,000-lot job. Its fields are plain values orjson writes as they are, to the same bytes.
    assert json_rows([{"usage": stored_usage(usage)}]) == json_rows([{"usage": usage}])


def test_no_usage_is_null() -> None:
    assert stored_usage(None) is None
