"""Which image an OpenAI refusal is about (`model.vision`), and the vision stage finding one it
does not name by leaving the images out in turn, with no I/O."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from lotlens_common.model.batch_files import parse_batch_line
from lotlens_common.model.vision import MAX_SUSPECTS, next_suspect, refused_image
from lotlens_common.stage.work import LotWork, VisionWork, read_work, stored_work
from tests.unit.test_stage_specs import stage, vision_lot

URLS = ["https://a/front.jpg", "https://a/side.jpg", "https://a/rear.jpg"]
UNSUPPORTED = ("You uploaded an unsupported image. Please make sure your image has of one the following "
               "formats: ['png', 'jpeg', 'gif', 'webp'].")


@pytest.mark.parametrize("param", ["input[0].content[1]", "input[0].content[1].image_url",
                                   "messages.[0].content.[1].image_url"])
def test_a_refusal_naming_the_images_place_in_its_param_names_that_image(param: str) -> None:
    assert refused_image("invalid_image_format", UNSUPPORTED, URLS, param) == URLS[1]


def test_a_refusal_naming_no_image_is_about_none_unless_the_request_had_one() -> None:
    assert refused_image("invalid_image_format", UNSUPPORTED, URLS) is None
    assert refused_image("invalid_image_format", UNSUPPORTED, URLS[:1]) == URLS[0]
    # Place 3 is the notes' text, not an image.
    assert refused_image("invalid_image_format", UNSUPPORTED, URLS, "input[0].content[3]") is None
    assert refused_image("invalid_value", UNSUPPORTED, URLS[:1]) is None  # not an image refusal


def test_the_param_of_a_batch_error_line_reaches_the_words_an_image_is_found_in() -> None:
    line = (b'{"custom_id": "lot", "response": {"status_code": 400, "body": {"error": {"message": '
            b'"bad image", "type": "invalid_request_error", "param": "input[0].content[2]", '
            b'"code": "invalid_image_format"}}}}')
    result = parse_batch_line(line)
    assert result is not None and result.error is not None
    assert refused_image(result.error_code, result.error, URLS) == URLS[2]


def test_suspects_are_the_images_in_turn_and_no_more_than_the_bound() -> None:
    assert next_suspect("invalid_image_format", URLS, ()) == URLS[0]
    assert next_suspect("invalid_image_format", URLS, URLS[:2]) == URLS[2]
    assert next_suspect("invalid_image_format", URLS, URLS) is None
    many = [f"https://a/{i}.jpg" for i in range(MAX_SUSPECTS + 2)]
    assert next_suspect("invalid_image_format", many, many[:MAX_SUSPECTS]) is None
    assert next_suspect("server_error", URLS, ()) is None


def _sent(lot: LotWork[VisionWork]) -> tuple[LotWork[VisionWork], list[str]]:
    [(prepared, body)] = asyncio.run(stage().prepare([lot])).requests
    content = body["input"][0]["content"]
    return prepared, [part["image_url"] for part in content if part["type"] == "input_image"]


def test_the_stage_leaves_each_image_out_in_turn_until_a_request_is_answered() -> None:
    spec = stage()
    lot, sent = _sent(vision_lot(*URLS))
    assert sent == URLS
    for left_out in URLS:  # each refused again, but the last: rear was the unreadable one
        again = spec.retry_refused(lot, "invalid_image_format", UNSUPPORTED)
        assert again is not None
        lot, sent = _sent(again)
        assert sent == [url for url in URLS if url != left_out] and lot.work.missing_images == (left_out,)
    assert spec.retry_refused(lot, "invalid_image_format", UNSUPPORTED) is None  # none left to suspect


def test_a_refusal_naming_an_image_after_one_naming_none_sends_the_suspect_again() -> None:
    # Front, left out after a refusal naming no image, stayed out once the next refusal named the
    # rear: the lot was described from the side alone and the front listed missing, though
    # nothing showed it was bad.
    spec = stage()
    front, side, rear = URLS
    lot, _ = _sent(vision_lot(*URLS))
    suspected = spec.retry_refused(lot, "invalid_image_format", UNSUPPORTED)
    assert suspected is not None
    lot, sent = _sent(suspected)
    assert sent == [side, rear]
    named = spec.retry_refused(lot, "invalid_image_format", f"Error while downloading {rear}.")
    assert named is not None
    lot, sent = _sent(named)
    assert sent == [front, side] and lot.work.missing_images == (rear,)


def test_a_suspect_chosen_after_a_refusal_naming_an_image_stays_out_once_stored_and_read_back() -> None:
    # Suspects are dropped from a row whose refused images grew after they were chosen (a pod of
    # the previous release recorded a refusal): not from one whose refusal came first.
    spec = stage()
    front, side, rear = URLS
    lot, _ = _sent(vision_lot(*URLS))
    named = spec.retry_refused(lot, "invalid_image_format", f"Error while downloading {rear}.")
    assert named is not None
    lot, _ = _sent(named)
    suspected = spec.retry_refused(lot, "invalid_image_format", UNSUPPORTED)
    assert suspected is not None
    work, ahead = stored_work(suspected.work)
    assert isinstance(work, dict) and ahead is not None
    stored = read_work(VisionWork, orjson.dumps(work).decode(), orjson.dumps(ahead).decode())
    assert (stored.suspects, stored.refused_images) == ((front,), (rear,))
    _, sent = _sent(suspected.with_work(stored))
    assert sent == [side]
