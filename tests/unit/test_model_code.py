"""Model-facing code: request bodies, response parsing, batch lines, languages (no network)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lotlens_common.model.batch_files import BatchLineResult, batch_line, parse_batch_line
from lotlens_common.model.errors import ModelOutputError, ModelUnavailableError
from lotlens_common.model.languages import ENGLISH, canonical_tag, is_supported_language, language_name
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import (
    parse_translation_response,
    translation_output_budget,
    translation_request_body,
)
from lotlens_common.model.vision import parse_vision_response, vision_request_body

URLS = ["https://img.example/1.jpg", "https://img.example/2.jpg", "data:image/png;base64,aGk="]


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
            "content": list(parts)}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def response(*output: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": status, "model": "o4-mini",
            "output": list(output)}


REASONING: dict[str, Any] = {"id": "rs_1", "type": "reasoning", "summary": []}


# --- request bodies -------------------------------------------------------------------------


def test_vision_body_sends_images_as_input_image_parts_and_notes_last() -> None:
    body = vision_request_body("2019 Toyota Camry, front collision", URLS, ModelSettings(image_detail="high"))
    assert body["model"] == "o4-mini"
    assert body["max_output_tokens"] == 4000
    assert "<p>" in body["instructions"]
    [user] = body["input"]
    assert user["role"] == "user"
    *images, notes = user["content"]
    assert images == [{"type": "input_image", "image_url": url, "detail": "high"} for url in URLS]
    assert notes == {"type": "input_text", "text": "2019 Toyota Camry, front collision"}


def test_vision_body_sends_reasoning_only_to_reasoning_models() -> None:
    body = vision_request_body("x", URLS[:1], ModelSettings(temperature=0.2))
    assert body["reasoning"] == {"effort": "low"}
    assert "temperature" not in body
    plain = vision_request_body("x", URLS[:1], ModelSettings(vision_model="gpt-4.1", temperature=0.2))
    assert "reasoning" not in plain
    assert plain["temperature"] == 0.2
    gpt5 = vision_request_body("x", URLS[:1], ModelSettings(vision_model="gpt-5-mini", reasoning_effort=None))
    assert "reasoning" not in gpt5 and "temperature" not in gpt5


def test_vision_body_refuses_a_single_string_of_urls() -> None:
    with pytest.raises(TypeError):
        vision_request_body("x", "https://img.example/1.jpg", ModelSettings())


def test_translation_body_has_a_strict_schema_with_every_language_but_english() -> None:
    body = translation_request_body("<p>Dent.</p>", ["en", "de", "fr", "de", "ja"], ModelSettings())
    assert body["model"] == "gpt-4.1-mini"
    # 500 + 3 languages x (100 + 2 x the text's 4 tokens): grows with languages and text.
    assert body["max_output_tokens"] == 824
    assert "reasoning" not in body
    assert body["input"] == [{"role": "user", "content": [{"type": "input_text", "text": "<p>Dent.</p>"}]}]
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "translations" and fmt["strict"] is True
    schema = fmt["schema"]
    assert list(schema["properties"]) == ["de", "fr", "ja"]
    assert schema["required"] == ["de", "fr", "ja"]
    assert schema["additionalProperties"] is False
    assert all(p["type"] == "string" for p in schema["properties"].values())
    assert "German" in body["instructions"] and "Japanese" in body["instructions"]


def test_translation_body_needs_a_non_english_known_language() -> None:
    with pytest.raises(ValueError):
        translation_request_body("<p>x</p>", ["en"], ModelSettings())
    with pytest.raises(ValueError):
        translation_request_body("<p>x</p>", ["de", "xx"], ModelSettings())


def test_model_settings_are_frozen() -> None:
    settings = ModelSettings()
    with pytest.raises(ValueError):
        settings.vision_model = "other"  # type: ignore[misc]


# --- parsing ----------------------------------------------------------------------------------


def test_vision_parse_skips_the_reasoning_item() -> None:
    body = response(REASONING, message(text_part("<p>Front bumper dented.</p>")))
    assert parse_vision_response(body) == "<p>Front bumper dented.</p>"


def test_vision_parse_joins_text_parts_and_wraps_plain_text() -> None:
    body = response(message(text_part("Front bumper dented & cracked.\n\n"), text_part("Bonnet bent.")))
    assert parse_vision_response(body) == "<p>Front bumper dented &amp; cracked.</p><p>Bonnet bent.</p>"
    fenced = response(message(text_part("```html\n<p>Ok.</p>\n```")))
    assert parse_vision_response(fenced) == "<p>Ok.</p>"


@pytest.mark.parametrize("body", [
    response(REASONING, status="incomplete") | {"incomplete_details": {"reason": "max_output_tokens"}},
    response(REASONING),
    response(message(text_part("   "))),
    response(message({"type": "refusal", "refusal": "I can't help with that."})),
    response(message(text_part("<p>x</p>")), status="failed"),
])
def test_vision_parse_rejects_unusable_responses(body: dict[str, Any]) -> None:
    with pytest.raises(ModelOutputError):
        parse_vision_response(body)


def test_vision_parse_reads_the_final_answer_not_the_commentary() -> None:
    # openapi.yaml, MessagePhase: an assistant message is `commentary` or the `final_answer`.
    commentary = message(text_part("I'll describe the damage now.")) | {"phase": "commentary"}
    final = message(text_part("<p>Front bumper dented.</p>")) | {"phase": "final_answer"}
    assert parse_vision_response(response(REASONING, commentary, final)) == "<p>Front bumper dented.</p>"


@pytest.mark.parametrize("code", ["server_error", "rate_limit_exceeded", "vector_store_timeout"])
def test_a_response_failed_for_a_passing_reason_is_unavailable_not_unusable(code: str) -> None:
    # openapi.yaml, ResponseErrorCode: these say "not now"; failing the lot for good was wrong.
    body = response(status="failed") | {"error": {"code": code, "message": "The server had an error."}}
    with pytest.raises(ModelUnavailableError, match=code):
        parse_vision_response(body)
    invalid = response(status="failed") | {"error": {"code": "invalid_prompt", "message": "no"}}
    with pytest.raises(ModelOutputError, match="invalid_prompt"):
        parse_vision_response(invalid)


def test_incomplete_error_names_the_reason() -> None:
    body = response(REASONING, status="incomplete") | {"incomplete_details": {"reason": "max_output_tokens"}}
    with pytest.raises(ModelOutputError, match="max_output_tokens"):
        parse_vision_response(body)


def test_translation_parse_returns_each_requested_language() -> None:
    doc = {"de": "<p>Delle.</p>", "fr": "Bosse."}
    body = response(message(text_part(orjson.dumps(doc).decode())))
    expected = {"de": "<p>Delle.</p>", "fr": "<p>Bosse.</p>"}
    assert parse_translation_response(body, ["en", "de", "fr"], "<p>Dent.</p>") == expected


def test_translation_parse_rejects_missing_languages_and_non_json() -> None:
    body = response(message(text_part('{"de": "<p>Delle.</p>"}')))
    with pytest.raises(ModelOutputError, match="'fr'"):
        parse_translation_response(body, ["de", "fr"], "<p>Dent.</p>")
    with pytest.raises(ModelOutputError, match="not JSON"):
        parse_translation_response(response(message(text_part("<p>Delle.</p>"))), ["de"], "<p>Dent.</p>")


# --- batch files ------------------------------------------------------------------------------


def test_batch_line_is_one_jsonl_request_for_the_responses_endpoint() -> None:
    line = batch_line("lot-1:vision", {"model": "o4-mini", "input": "x"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"custom_id": "lot-1:vision", "method": "POST", "url": "/v1/responses",
                                  "body": {"model": "o4-mini", "input": "x"}}


def test_parse_batch_line_reads_output_and_error_file_lines() -> None:
    ok_body = response(message(text_part("<p>x</p>")))
    lines = [
        orjson.dumps({"id": "batch_req_1", "custom_id": "a", "error": None,
                      "response": {"status_code": 200, "request_id": "req_1", "body": ok_body}}),
        b"",
        orjson.dumps({"id": "batch_req_2", "custom_id": "b", "error": None, "response": {
            "status_code": 500, "request_id": "req_2",
            "body": {"error": {"message": "The server had an error", "type": "server_error", "param": None,
                               "code": None}}}}),
        orjson.dumps({"id": "batch_req_3", "custom_id": "c", "response": None, "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."}}),
        orjson.dumps({"id": "batch_req_4", "custom_id": "d", "error": None, "response": {
            "status_code": 400, "request_id": "req_4",
            "body": {"error": {"message": "Invalid schema", "type": "invalid_request_error",
                               "param": "text.format.schema", "code": "invalid_json_schema"}}}}),
    ]
    a, b, c, d = [result for result in map(parse_batch_line, lines) if result is not None]
    assert a == BatchLineResult("a", ok_body, None)
    assert b.body is None and b.error == "HTTP 500 server_error: The server had an error"
    assert b.error_code == "server_error"
    assert c.body is None and c.error_code == "batch_expired"
    assert c.error == ("batch_expired: This request could not be executed before the completion window "
                       "expired.")
    assert d.error_code == "invalid_json_schema" and d.error is not None and "HTTP 400" in d.error
    # What the lots' clients read: a fixed sentence per kind and OpenAI's type and code, never its words.
    assert d.reason == "the model refused the request (invalid_request_error: invalid_json_schema)"
    assert b.reason == "the model API was unavailable (server_error)"
    assert c.reason == "the model request failed (batch_expired)"


def test_a_refused_batch_lines_reason_keeps_openais_code_but_not_its_message() -> None:
    # OpenAI's 4xx text went verbatim into the failed lot's error_message: it can name the
    # configured model or the account's state.
    line = orjson.dumps({"id": "batch_req_1", "custom_id": "a", "error": None, "response": {
        "status_code": 400, "request_id": "req_1", "body": {"error": {
            "message": "The requested model 'o4-mini-acme-private' does not exist in org-Secret123.",
            "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}}})
    result = parse_batch_line(line)
    assert result is not None and result.error is not None and "org-Secret123" in result.error
    assert result.reason == "the model refused the request (invalid_request_error: model_not_found)"


@pytest.mark.parametrize(("raw", "problem"), [(b"{not json", "not JSON"), (b"[1, 2]", "no custom_id"),
                                               (b'{"response": {"status_code": 200}}', "no custom_id")])
def test_parse_batch_line_refuses_a_line_that_holds_no_result(raw: bytes, problem: str) -> None:
    with pytest.raises(ModelOutputError, match=problem):
        parse_batch_line(raw)


# --- languages --------------------------------------------------------------------------------


def test_language_tags_are_bcp47_known_to_langcodes_in_canonical_form() -> None:
    assert ENGLISH == "en" and is_supported_language("en")
    assert all(is_supported_language(tag) for tag in ("de", "zu", "pt-BR", "zh-Hant", "sr-Latn", "es-419"))
    # Known but not canonical: the gateway canonicalises first.
    assert not any(is_supported_language(tag) for tag in ("DE", "eng", "pt-br", "iw"))
    assert not any(is_supported_language(tag) for tag in ("xx", "", "und", "mul", "x-pig", "en-XX"))
    assert canonical_tag("PT-br") == "pt-BR" and canonical_tag("iw") == "he" and canonical_tag("xx") is None
    # BCP 47's canonical form, not CLDR's aliases: Tagalog and Dari keep their own tags and names.
    assert canonical_tag("tl") == "tl" and language_name("tl") == "Tagalog"
    assert canonical_tag("prs") == "prs" and language_name("prs") == "Dari"
    assert canonical_tag("eng") is None and canonical_tag("per") is None
    assert language_name("de") == "German" and language_name("ja") == "Japanese"
    assert language_name("pt-BR") == "Portuguese (Brazil)"
    assert language_name("zh-Hant") == "Chinese (Traditional)"
    assert language_name("sr-Latn") == "Serbian (Latin)"
    with pytest.raises(ValueError):
        language_name("pt-br")


def test_translation_names_each_variant_in_words_and_keys_it_by_its_tag() -> None:
    tags = ["en", "pt-BR", "zh-Hant", "sr-Latn", "tl"]
    body = translation_request_body("<p>Dent.</p>", tags, ModelSettings())
    schema = body["text"]["format"]["schema"]
    assert list(schema["properties"]) == tags[1:]
    for words, tag in (("Portuguese (Brazil)", "pt-BR"), ("Chinese (Traditional)", "zh-Hant"),
                       ("Serbian (Latin)", "sr-Latn"), ("Tagalog", "tl")):
        assert f'{words}: property "{tag}"' in body["instructions"]
        assert words in schema["properties"][tag]["description"]


def test_the_translation_budget_grows_with_languages_text_and_room_up_to_the_ceiling() -> None:
    settings = ModelSettings()
    short, long = "<p>Dent.</p>", "<p>" + "Deep dent on the left door. " * 200 + "</p>"
    one = translation_output_budget(short, ["de"], settings)
    assert translation_output_budget(short, ["de", "fr"], settings) > one
    assert translation_output_budget(long, ["de"], settings) > one
    assert translation_output_budget(short, ["de"], settings, room=2) == 2 * one
    ten = ["de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ja", "zh"]
    assert translation_output_budget(long * 4, ten, settings) == settings.translation_max_output_tokens
    reasoning = ModelSettings(translation_model="o4-mini")
    assert translation_output_budget(short, ["de"], reasoning) > one  # its reasoning shares the budget
