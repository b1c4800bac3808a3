"""OpenAI's documented limits that the stage must stay under, each stated once, with its source.

Sources: the OpenAPI description (openai/openai-openapi at f85dbe2, a copy in
`/work/shared/reference/openai-openapi/openapi.yaml`; line numbers of that copy) and the
"Images and vision" guide (platform.openai.com/docs/guides/images-vision, "Image input
requirements" and "Calculating costs"). "MB" there is decimal: 200 MB is 200,000,000 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# createBatch.input_file_id: "The file can contain up to 50,000 requests, and can be up to 200 MB
# in size." (openapi.yaml 33076); createFile: "The Batch API only supports .jsonl files up to
# 200 MB in size." (openapi.yaml 6485).
MAX_REQUESTS_PER_BATCH = 50_000
MAX_BATCH_FILE_BYTES = 200_000_000
# Our margin under it: the file is measured as written, but a limit met to the byte is a limit
# one encoding change away from "File is too large".
BATCH_FILE_MARGIN_BYTES = 2_000_000

# Metadata: "Set of 16 key-value pairs ... Keys are strings with a maximum length of 64
# characters. Values are strings with a maximum length of 512 characters." (openapi.yaml 44353)
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512

# Images and vision guide, "Image input requirements": PNG, JPEG, WEBP, non-animated GIF; up to
# 20 MB per image, 500 individual images and 50 MB of image bytes per request. A request past
# them is refused, and a lot whose batch line is refused fails for good (`core/outcomes.py`).
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
MAX_BYTES_PER_IMAGE = 20_000_000
MAX_IMAGES_PER_REQUEST = 500
MAX_IMAGE_BYTES_PER_REQUEST = 50_000_000


def fit_request_images(urls: Sequence[str], sizes: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(the images one request carries, those left out): in the lot's order, each image of at most
    20 MB that still fits in 500 images and 50 MB together.

    An image of unknown size (none given, or 0: no image file is empty) counts as the most one
    image may weigh: counted as 0, any number of them went in one request, past 50 MB.
    """
    kept: list[str] = []
    left_out: list[str] = []
    total = 0
    for url in urls:
        size = sizes.get(url) or MAX_BYTES_PER_IMAGE
        if (len(kept) < MAX_IMAGES_PER_REQUEST and size <= MAX_BYTES_PER_IMAGE
                and total + size <= MAX_IMAGE_BYTES_PER_REQUEST):
            kept.append(url)
            total += size
        else:
            left_out.append(url)
    return kept, left_out


# Enqueued-token budget per model when the operator sets none: about the batch queue limits of
# OpenAI's usage tier 1 as the model pages list them (platform.openai.com/docs/models/<model>,
# "Rate limits"), so a new organisation never has a batch fail with `token_limit_exceeded`.
# An operator raises it to their tier's value (LOTLENS_STAGE__ENQUEUED_TOKEN_LIMIT; 0 = none).
ENQUEUED_TOKEN_DEFAULTS = {"o4-mini": 1_000_000, "gpt-4.1-mini": 2_000_000, "gpt-4.1-nano": 2_000_000,
                           "gpt-4o-mini": 2_000_000, "gpt-5-mini": 5_000_000, "gpt-5-nano": 2_000_000}
# Any other model: the smallest tier-1 queue limit among the text models.
ENQUEUED_TOKEN_FALLBACK = 90_000


def default_token_limit(model: str) -> int:
    """The enqueued-token budget of a model when the operator sets none."""
    matches = [prefix for prefix in ENQUEUED_TOKEN_DEFAULTS if model.startswith(prefix)]
    return ENQUEUED_TOKEN_DEFAULTS[max(matches, key=len)] if matches else ENQUEUED_TOKEN_FALLBACK


# OpenAI's batch completion window ("24h", the only one createBatch accepts).
COMPLETION_WINDOW_S = 24 * 3600.0


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """The metadata, if OpenAI will accept it; ValueError naming the broken limit otherwise."""
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"{len(metadata)} metadata pairs, more than {MAX_METADATA_PAIRS}")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"metadata {key!r} is longer than {MAX_METADATA_KEY_CHARS}/"
                             f"{MAX_METADATA_VALUE_CHARS} characters (key/value)")
    return metadata
