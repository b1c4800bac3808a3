"""The English damage description: the Responses API request and the parsing of its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lotlens_common.model.html_text import as_paragraph_html
from lotlens_common.model.prompts import VISION_INSTRUCTIONS
from lotlens_common.model.response_text import response_output_text
from lotlens_common.model.settings import ModelSettings, sampling_options


def vision_request_body(additional_info: str, image_urls: Sequence[str],
                        settings: ModelSettings) -> dict[str, Any]:
    """A `/v1/responses` body: the lot's images as `input_image` parts, then its notes as the last text."""
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
        "max_output_tokens": settings.vision_max_output_tokens,
        **sampling_options(settings.vision_model, settings),
    }


def parse_vision_response(body: Mapping[str, Any]) -> str:
    """The English HTML description from a Responses API body; ModelOutputError when unusable."""
    return as_paragraph_html(response_output_text(body))
