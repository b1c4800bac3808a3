"""Request validation for `/v1/responses` and `/v1/chat/completions`, with OpenAI's 400 messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lotlens_openai_standin.api_errors import ApiError, bad_request
from lotlens_openai_standin.models import ModelFacts, is_reasoning_model
from lotlens_openai_standin.parameter_checks import (
    check_output_limit,
    check_parameter_names,
    check_parameter_values,
    known_model,
)

IMAGE_DETAILS = ("low", "high", "auto", "original")
RESPONSES_PART_TYPES = ("input_text", "input_image", "input_file", "output_text", "refusal")
CHAT_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
ROLES = ("user", "assistant", "system", "developer")
CHAT_ROLES = (*ROLES, "tool")


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), "a value")


def _invalid_type(param: str, expected: str, value: object) -> ApiError:
    message = f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead."
    return bad_request(message, param=param, code="invalid_type")


def _invalid_value(param: str, value: object, allowed: tuple[str, ...]) -> ApiError:
    choices = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
    return bad_request(f"Invalid value: '{value}'. Supported values are: {choices}.", param=param,
                       code="invalid_value")


def _missing(param: str) -> ApiError:
    return bad_request(f"Missing required parameter: '{param}'.", param=param,
                       code="missing_required_parameter")


def require_model(body: Mapping[str, Any]) -> str:
    """The request's model, or the 400 OpenAI answers when it is missing."""
    model = body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _invalid_type("model", "a string", model)
    return model


def _is_image_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    return url.startswith(("http://", "https://")) or (url.startswith("data:image/") and ";base64," in url)


def _check_image_url(url: object, param: str) -> None:
    if _is_image_url(url):
        return
    if not isinstance(url, str):
        raise _invalid_type(param, "a string", url)
    raise bad_request(f"Invalid '{param}'. Expected a valid URL or a base64-encoded data URL with an image "
                      "MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=').", param=param,
                      code="invalid_value")


def _check_detail(detail: object, param: str, required: bool) -> None:
    if detail is None:
        if required:
            raise _missing(param)
        return
    if detail not in IMAGE_DETAILS:
        raise _invalid_value(param, detail, IMAGE_DETAILS)


def _check_responses_part(part: object, i: int, j: int) -> None:
    # The part's place (`input[0].content[2]`) is written out for an error alone: a 50,000-lot
    # batch has 300,000 parts to check, nearly all of them well-formed.
    if not isinstance(part, dict):
        raise _invalid_type(f"input[{i}].content[{j}]", "an object", part)
    kind = part.get("type")
    if kind not in RESPONSES_PART_TYPES:
        raise _invalid_value(f"input[{i}].content[{j}].type", kind, RESPONSES_PART_TYPES)
    if kind == "input_text" and not isinstance(part.get("text"), str):
        raise _invalid_type(f"input[{i}].content[{j}].text", "a string", part.get("text"))
    if kind == "input_image":
        url = part.get("image_url")
        if url is None and part.get("file_id") is None:
            raise _missing(f"input[{i}].content[{j}].image_url")
        if url is not None and not _is_image_url(url):
            _check_image_url(url, f"input[{i}].content[{j}].image_url")
        if part.get("detail") not in IMAGE_DETAILS:
            _check_detail(part.get("detail"), f"input[{i}].content[{j}].detail", required=True)


# What an answer needs of a Responses `input`: its images' URLs, and the last user message's text (its
# content when a string, else the text of its last `input_text` part, "" when it has none). A plain
# tuple: made for every line of a batch, a named one took 0.3 us more to make.
InputRead = tuple[list[str], str]


_WEB_URL = ("http://", "https://")


def responses_input(body: Mapping[str, Any]) -> InputRead:
    """Check `input` (a string, or items whose message parts are well-formed, images included) and
    read it in the same walk: checked, then read in a second walk, it was two walks over a 50,000-lot
    batch's 300,000 parts. Reading raises nothing, so the first problem is the one it was. Items of
    another type than `message` are read, not checked, as OpenAI takes them."""
    items = body.get("input")
    if items is None:
        raise _missing("input")
    if isinstance(items, str):
        return [], items
    if not isinstance(items, list):
        raise _invalid_type("input", "a string or an array", items)
    urls: list[str] = []
    last_text = ""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid_type(f"input[{i}]", "an object", item)
        checked = item.get("type", "message") == "message"
        role, content = item.get("role"), item.get("content")
        if checked and role not in ROLES:
            raise _invalid_value(f"input[{i}].role", role, ROLES)
        if not isinstance(content, list):
            if checked and not isinstance(content, str):
                raise _invalid_type(f"input[{i}].content", "a string or an array", content)
            if role == "user":
                last_text = content if isinstance(content, str) else ""
            continue
        texts, text = 0, ""
        for j, part in enumerate(content):
            # The well-formed parts pass here; any other goes through the whole check, which refuses
            # it with its message (or passes it: a data URL, a file_id, a part of another type).
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "input_image":
                url = part.get("image_url")
                if checked and not (isinstance(url, str) and url.startswith(_WEB_URL)
                                    and part.get("detail") in IMAGE_DETAILS):
                    _check_responses_part(part, i, j)
                urls.append(str(url))
            elif kind == "input_text":
                if checked and not isinstance(part.get("text"), str):
                    _check_responses_part(part, i, j)
                texts, text = texts + 1, part.get("text", "")
            elif checked:
                _check_responses_part(part, i, j)
        if role == "user":
            last_text = str(text) if texts else ""
    return urls, last_text


def check_chat_messages(body: Mapping[str, Any]) -> None:
    """Check `messages`: roles and content parts, `image_url` parts included."""
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid_type("messages", "a non-empty array", messages)
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid_type(param, "an object", message)
        if message.get("role") not in CHAT_ROLES:
            raise _invalid_value(f"{param}.role", message.get("role"), CHAT_ROLES)
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _invalid_type(f"{param}.content", "a string or an array", content)
        for j, part in enumerate(content):
            part_param = f"{param}.content[{j}]"
            if not isinstance(part, dict):
                raise _invalid_type(part_param, "an object", part)
            kind = part.get("type")
            if kind not in CHAT_PART_TYPES:
                raise _invalid_value(f"{part_param}.type", kind, CHAT_PART_TYPES)
            if kind == "image_url":
                image = part.get("image_url")
                if not isinstance(image, dict):
                    raise _invalid_type(f"{part_param}.image_url", "an object", image)
                _check_image_url(image.get("url"), f"{part_param}.image_url.url")
                _check_detail(image.get("detail"), f"{part_param}.image_url.detail", required=False)


def check_json_schema_format(fmt: object, param: str) -> None:
    """Check a `json_schema` format the way strict structured outputs do."""
    if not isinstance(fmt, dict):
        raise _invalid_type(param, "an object", fmt)
    if fmt.get("type") != "json_schema":
        return
    name = fmt.get("name")
    if not isinstance(name, str) or not name:
        raise _missing(f"{param}.name")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _missing(f"{param}.schema")
    if fmt.get("strict"):
        _check_strict_object(schema, name, param + ".schema", context=())


def _check_strict_object(schema: Mapping[str, Any], name: str, param: str, context: tuple[str, ...]) -> None:
    where = f"Invalid schema for response_format '{name}': In context={context}, "
    if schema.get("type") != "object":
        # Nested non-object schemas (strings, nullable unions, anyOf…) have no strict-mode rules here.
        if context:
            return
        raise bad_request(where + "schema must be a JSON Schema of 'type: \"object\"'.", param=param,
                          code="invalid_json_schema")
    if schema.get("additionalProperties") is not False:
        raise bad_request(where + "'additionalProperties' is required to be supplied and to be false.",
                          param=param, code="invalid_json_schema")
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    # Refused as OpenAI refuses them (a list of properties once raised here: a plain-text 500 the
    # SDK retried, and inside a batch a task that died with the batch left `in_progress` for good).
    if not isinstance(properties, dict):
        raise bad_request(where + f"'properties' must be an object, got {type(properties).__name__}.",
                          param=param, code="invalid_json_schema")
    if not isinstance(required, list):
        raise bad_request(where + f"'required' must be an array, got {type(required).__name__}.",
                          param=param, code="invalid_json_schema")
    missing = [key for key in properties if key not in required]
    if missing:
        raise bad_request(where + "'required' is required to be supplied and to be an array including every "
                          f"key in properties. Missing '{missing[0]}'.", param=param,
                          code="invalid_json_schema")
    for key, sub in properties.items():
        if isinstance(sub, dict):
            _check_strict_object(sub, name, param, (*context, "properties", key))


def check_sampling(body: Mapping[str, Any], model: str, chat: bool) -> None:
    """Reasoning models refuse `temperature`/`top_p`; other models refuse `reasoning` options."""
    if is_reasoning_model(model):
        for key in ("temperature", "top_p") + (("max_tokens",) if chat else ()):
            if body.get(key) is not None:
                hint = " Use 'max_completion_tokens' instead." if key == "max_tokens" else ""
                raise bad_request(f"Unsupported parameter: '{key}' is not supported with this model.{hint}",
                                  param=key, code="unsupported_parameter")
        return
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        raise bad_request("Unsupported parameter: 'reasoning.effort' is not supported with this model.",
                          param="reasoning.effort", code="unsupported_parameter")
    if chat and body.get("reasoning_effort") is not None:
        raise bad_request("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                          param="reasoning_effort", code="unsupported_parameter")


def check_store(body: Mapping[str, Any]) -> None:
    """`store` is a boolean or null (openapi.yaml), as OpenAI checks it."""
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise _invalid_type("store", "a boolean", store)


def check_instructions(body: Mapping[str, Any]) -> None:
    """`instructions` is a string or null (openapi.yaml's `CreateResponse`), as OpenAI checks it."""
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid_type("instructions", "a string", instructions)


def check_responses_request(body: Mapping[str, Any]) -> tuple[str, InputRead]:
    """Validate a Responses API body; return its model and its input as read (`responses_input`)."""
    model = require_model(body)
    facts = known_model(model, chat=False)
    check_parameter_names(body, chat=False)
    if body.get("stream"):
        raise bad_request("The stand-in does not stream; send 'stream': false.", param="stream",
                          code="unsupported_value")
    read = responses_input(body)
    check_store(body)
    check_instructions(body)
    check_sampling(body, model, chat=False)
    check_parameter_values(body, False, facts)
    text = body.get("text")
    if isinstance(text, dict) and text.get("format") is not None:
        check_json_schema_format(text["format"], "text.format")
    return model, read


def check_responses_line(body: Mapping[str, Any], facts: ModelFacts) -> InputRead:
    """Validate a Responses API body of a shape (`shapes.py`) a body of which passed every check (its
    model's `facts`); return its input as read. Every check but those of the per-line fields (the
    input's, the cap's) reads the shape's fields alone and would pass again, so only those two run,
    in their order above: the first one failing is the one that fails there."""
    read = responses_input(body)
    check_output_limit(body, False, facts)
    return read


def check_chat_request(body: Mapping[str, Any]) -> str:
    """Validate a Chat Completions body; return its model."""
    model = require_model(body)
    facts = known_model(model, chat=True)
    check_parameter_names(body, chat=True)
    if body.get("stream"):
        raise bad_request("The stand-in does not stream; send 'stream': false.", param="stream",
                          code="unsupported_value")
    check_chat_messages(body)
    check_store(body)
    check_sampling(body, model, chat=True)
    check_parameter_values(body, True, facts)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        inner = fmt.get("json_schema")
        if not isinstance(inner, dict):
            raise _missing("response_format.json_schema")
        check_json_schema_format({"type": "json_schema", **inner}, "response_format.json_schema")
    return model


def check_chat_line(body: Mapping[str, Any]) -> str:
    """Validate a Chat Completions body of a shape a body of which passed every check; return its
    model. Only the checks of the per-line fields run, the messages' and the cap's (as in
    `check_responses_line`)."""
    model = str(body["model"])  # the shape's: it passed `require_model`
    facts = known_model(model, chat=True)
    check_chat_messages(body)
    check_output_limit(body, True, facts)
    return model
