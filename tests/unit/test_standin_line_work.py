"""What the stand-in works out for each line of a batch, held to its rules on the odd cases: the
image markers' refusals, the images counted toward the enqueued tokens, a slice's sums, validation
without the token estimate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from lotlens_openai_standin.answers import RESPONSES_ENDPOINT, answer
from lotlens_openai_standin.api_errors import ApiError
from lotlens_openai_standin.batch_input import validate_input_file
from lotlens_openai_standin.batch_run import RunState, run_slice
from lotlens_openai_standin.image_costs import image_details


def _vision(urls: list[str], text: str = "Camry") -> dict[str, Any]:
    images = [{"type": "input_image", "image_url": url, "detail": "auto"} for url in urls]
    return {"model": "o4-mini", "input": [{"role": "user", "content": [*images, {"type": "input_text",
                                                                                 "text": text}]}]}


def _refusal(body: dict[str, Any]) -> tuple[int, str | None, str]:
    with pytest.raises(ApiError) as refused:
        answer(RESPONSES_ENDPOINT, body)
    return refused.value.status, refused.value.code, refused.value.message


def test_an_image_openai_cannot_fetch_is_refused_first_and_named() -> None:
    urls = ["https://img.test/front.jpg", "https://img.test/standin-unsupported-rear.jpg",
            "https://img.test/standin-unfetchable-side.jpg", "https://img.test/standin-unfetchable-top.jpg"]
    assert _refusal(_vision(urls, "[standin:error]")) == (
        400, "invalid_image_url", "Error while downloading https://img.test/standin-unfetchable-side.jpg.")
    status, code, _ = _refusal(_vision(urls[:2], "[standin:error]"))
    assert (status, code) == (400, "invalid_image_format")
    assert _refusal(_vision(urls[:1], "[standin:error]"))[0] == 500
    assert answer(RESPONSES_ENDPOINT, _vision(urls[:1]))["status"] == "completed"


def test_the_images_a_body_holds_count_at_their_detail_wherever_they_are() -> None:
    def image(detail: str | None) -> dict[str, Any]:
        return {"type": "input_image", "image_url": "https://img.test/a.jpg", "detail": detail}

    items = [{"role": "user", "content": [image("low"), {"type": "input_text", "text": "x"}, "junk",
                                          image(None)]},
             "junk", {"role": "user", "content": "plain"}, {"type": "message", "content": [image("high")]}]
    assert image_details({"input": items}, chat=False) == ["low", "auto", "high"]
    assert image_details({"input": "plain"}, chat=False) == []
    assert image_details({"input": {"content": [image("low")]}}, chat=False) == []
    assert image_details({}, chat=False) == []
    # Chat bodies keep the detail in the part's `image_url` (a bare URL string has none).
    chat = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "low"}},
                                         {"type": "image_url", "image_url": "u"}, image("high"),
                                         {"type": "image_url", "image_url": {"url": "u"}}]}, "junk"]
    assert image_details({"messages": chat}, chat=True) == ["low", "auto", "auto"]
    assert image_details({"messages": "plain"}, chat=True) == []


def test_slices_add_up_the_counts_and_tokens_of_their_lines(tmp_path: Path) -> None:
    bodies = [_vision([f"https://img.test/{i}.jpg"] * (i % 3), f"lot {i}") for i in range(7)]
    bodies[2]["max_output_tokens"] = 3  # refused: below the minimum
    bodies[5]["model"] = "gpt-4.1-mini"  # another shape, no reasoning tokens
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"custom_id": f"lot-{i}", "method": "POST",
                                              "url": RESPONSES_ENDPOINT, "body": body}) + b"\n"
                                for i, body in enumerate(bodies)))
    state = RunState(str(tmp_path / "out.jsonl"), str(tmp_path / "err.jsonl"), tokens=[1, 2, 3])
    answered = run_slice(source, state, 4, RESPONSES_ENDPOINT, None, "seed", dict)
    answered |= run_slice(source, state, 4, RESPONSES_ENDPOINT, None, "seed", dict)
    assert (state.executed, state.completed, state.failed) == (7, 6, 1)
    sums = [sum(line["tokens"][k] for line in answered.values()) for k in range(3)]
    assert state.tokens == [1 + sums[0], 2 + sums[1], 3 + sums[2]]
    assert 0 not in sums


def test_validation_without_the_token_estimate_finds_what_it_finds_with_it(tmp_path: Path) -> None:
    # Without an enqueued-token limit nothing reads the estimate, and validation leaves it out.
    bodies = [_vision([f"https://img.test/{i}.jpg"] * (i % 3), f"lot {i}") for i in range(50)]
    bodies[7]["model"] = "gpt-4.1-mini"  # a second model in the batch
    lines = [orjson.dumps({"custom_id": f"lot-{i % 40}", "method": "POST", "url": RESPONSES_ENDPOINT,
                           "body": body}) for i, body in enumerate(bodies)]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([*lines, b"{not json", b'{"custom_id": "x", "method": "GET"}']))
    counted = validate_input_file(source, RESPONSES_ENDPOINT)
    uncounted = validate_input_file(source, RESPONSES_ENDPOINT, count_tokens=False)
    assert len(counted.errors) == 15 and counted.estimated_tokens and uncounted.estimated_tokens is None
    assert (uncounted.errors, uncounted.total, uncounted.model, uncounted.custom_ids) == (
        counted.errors, counted.total, counted.model, counted.custom_ids)
