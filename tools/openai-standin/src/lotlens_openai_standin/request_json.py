"""Reading JSON request bodies with OpenAI's answer for malformed ones."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from lotlens_openai_standin.api_errors import bad_request

_UNPARSEABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 like OpenAI's."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_request(_UNPARSEABLE) from None
    if not isinstance(body, dict):
        raise bad_request("Invalid type for the request body: expected an object.", code="invalid_type")
    return body
