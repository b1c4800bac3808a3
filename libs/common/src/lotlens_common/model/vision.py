"""The English damage description: the Responses API request and the parsing of its answer."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lotlens_common.model.errors import ModelIncompleteError, ModelOutputError
from lotlens_common.model.html_text import as_paragraph_html
from lotlens_common.model.prompts import VISION_INSTRUCTIONS
from lotlens_common.model.response_text import response_output_text
from lotlens_common.model.settings import ModelSettings, sampling_options

# A description cut off at its output budget is asked for once more with this many times the
# room: a reasoning model (o4-mini) spends its reasoning from the same `max_output_tokens`, so
# one cut off at 4,000 often fits in 8,000. Never past the ceiling: gpt-4o-mini's largest output,
# the smallest of the vision models priced here (more would be refused as too large).
VISION_RETRY_ROOM = 2
VISION_OUTPUT_CEILING = 16_384


def vision_output_budget(settings: ModelSettings, room: int = 1) -> int:
    """`max_output_tokens` for a description: `room` times the configured one, never more than the
    ceiling (nor less than the configured one)."""
    budget = settings.vision_max_output_tokens
    return min(budget * room, max(budget, VISION_OUTPUT_CEILING))


def vision_retry_room(settings: ModelSettings, room: int, error: ModelOutputError) -> int | None:
    """The room to ask again with after an unusable description: `VISION_RETRY_ROOM` once, when
    it was cut off by its output budget and a larger one is allowed; None otherwise (filtered,
    not text, or cut off with the larger room: asked again, it would end the same)."""
    if not isinstance(error, ModelIncompleteError) or error.reason != "max_output_tokens" or room != 1:
        return None
    more = vision_output_budget(settings, VISION_RETRY_ROOM) > vision_output_budget(settings)
    return VISION_RETRY_ROOM if more else None


def vision_request_body(additional_info: str, image_urls: Sequence[str],
                        settings: ModelSettings, room: int = 1) -> dict[str, Any]:
    """A `/v1/responses` body: the lot's images as `input_image` parts, then its notes as the last
    text; `room`: how many times the configured output budget (`vision_output_budget`)."""
    if isinstance(image_urls, str):
        raise TypeError("image_urls must be a sequence of URLs, not one string")
    content: list[dict[str, Any]] = [
        {"type": "input_image", "image_url": url, "detail": settings.image_detail} for url in image_urls
    ]
    # The notes come last and verbatim: the instructions call the final text "the lot notes".
    content.append({"type": "input_text", "text": additional_info})
    return {
        "model": settings.vision_model,
        "instructions": VISION_INSTRUCTIONS,
        "input": [{"role": "user", "content": content}],
        "max_output_tokens": vision_output_budget(settings, room),
        # OpenAI keeps a response (signed image URLs, the description) 30 days unless told not to.
        "store": False,
        **sampling_options(settings.vision_model, settings),
    }


# Error codes with which OpenAI refuses a request for one of its images (openapi.yaml,
# ResponseErrorCode): it could not download or read the image.
IMAGE_REFUSALS = frozenset({
    "invalid_image", "invalid_image_format", "invalid_image_url", "image_too_large", "image_too_small",
    "image_parse_error", "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type",
    "empty_image_file", "failed_to_download_image", "image_file_not_found"})


# An image's place in the request, as OpenAI's `param` (or its message) names it:
# "input[0].content[1]", "messages.[0].content.[1].image_url", "messages[1].content[1].image_url.url".
_CONTENT_INDEX = re.compile(r"content\.?\[(\d+)\]")
# Images left out in turn after refusals naming none (`next_suspect`): a refused request is not
# billed, so this bounds the extra requests (time, rate limit), not the cost; the one answer paid
# for is the description itself. Counted afresh after a refusal naming an image (its callers clear
# the suspects): each such refusal leaves an image out for good, so the requests stay bounded.
MAX_SUSPECTS = 5


def refused_image(code: str | None, message: str, image_urls: Sequence[str],
                  param: str | None = None) -> str | None:
    """The image a refusal is about, when it names it: its URL in the message ("Error while
    downloading <url>."), its place in `param` (the request's content holds the images first, in
    `image_urls`' order), or the request held only one. OpenAI fetches from its own network and
    reads more than LotLens checks, so an image the check passed can still be refused, and the
    lot is then described from the others (API.md: unusable images are no error)."""
    if code not in IMAGE_REFUSALS:
        return None
    named = [url for url in image_urls if url in message]
    if named:
        return max(named, key=len)  # the longest: one URL may begin another
    place = _CONTENT_INDEX.search(param or "") or _CONTENT_INDEX.search(message)
    if place is not None and int(place.group(1)) < len(image_urls):
        return image_urls[int(place.group(1))]
    return image_urls[0] if len(image_urls) == 1 else None


def next_suspect(code: str | None, image_urls: Sequence[str], suspects: Sequence[str]) -> str | None:
    """The image to leave out of the next request after a refusal for an image it does not name
    ("You uploaded an unsupported image", no `param`): the first of `image_urls` (those still
    sent, the last suspect among them again) not yet a suspect. The first answer then is the
    description without the bad image; None past `MAX_SUSPECTS` or when the refusal is not an
    image's."""
    if code not in IMAGE_REFUSALS or len(suspects) >= MAX_SUSPECTS:
        return None
    return next((url for url in image_urls if url not in suspects), None)


def parse_vision_response(body: Mapping[str, Any]) -> str:
    """The English HTML description from a Responses API body; ModelOutputError when unusable."""
    return as_paragraph_html(response_output_text(body))
