"""Synchronous mode (one lot): images checked, the model called through the OpenAI stand-in."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from lotlens_common.model.settings import ModelSettings
from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, make_lots, running_gateway
from tests.integration.sync_support import model_calls, one_lot
from tests.polling import wait_for
from tests.seeds import bash_block_after, run_recipe, seed_client_class
from tests.standin import Standin, description, serve_standin, translation

pytestmark = pytest.mark.integration


@pytest.fixture()
def sync_gateway(settings: ServiceSettings, engine: Engine, standin: Standin) -> Iterator[Gateway]:
    with running_gateway(settings, engine, model_url=standin.base_url) as gw:
        yield gw


# The stand-in writes each language in its script: the English with Cyrillic letters (capitals for capitals).
RUSSIAN = "Туангин хитион: 1 имажд(т) сдхидцдг. 2019 Уошоуа Вамсш, есону воллитион гамажд"


def test_the_seed_client_gets_every_language_and_the_missing_images(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    client = seed_client_class()(sync_gateway.url, sync_gateway.key)
    result, status = client.sync_generate(
        lot_id="sync-test-001", additional_info="2019 Toyota Camry, front collision damage",
        image_urls=[f"{images}/car1.png", f"{images}/car2-missing.png"], languages=["en", "ru", "de"])
    assert status == 200, result
    assert result["version"] == "1.0.0" and result["processing_mode"] == "synchronous"
    assert result["total_lots"] == 1 and result["processed_at"].endswith("Z")
    lot = result["lots"][0]
    english = description(1, "2019 Toyota Camry, front collision damage")
    assert lot["lot_id"] == "sync-test-001" and lot["status"] == "completed" and lot["processed_images"] == 1
    assert lot["descriptions"] == [{"language": "en", "damages": english},
                                   {"language": "ru", "damages": translation("ru", english)},
                                   {"language": "de", "damages": translation("de", english)}]
    assert lot["descriptions"][1]["damages"].startswith(f"<p>[ru] {RUSSIAN}</p><p>")
    assert lot["missing_images"] == [f"{images}/car2-missing.png"]
    assert model_calls(standin) == 2  # vision, then one translation call for every language
    # Added: both answers' tokens, priced at the full (direct) list price.
    usage = lot["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > usage["reasoning_tokens"] > 0
    assert usage["estimated_cost_usd"] > 0 and set(usage) == {
        "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "estimated_cost_usd"}


@pytest.mark.parametrize("languages", [["en"], ["en-Latn"], ["en", "en-Latn"]])
def test_english_only_needs_no_translation_call(
        sync_gateway: Gateway, images: str, standin: Standin, languages: list[str]) -> None:
    # `en-Latn` is English in the script English is always written in: it was paid for as a
    # translation from English into English.
    response = sync_gateway.submit(one_lot(images, names=("a.png", "b.png")), languages=languages)
    assert response.status_code == 200
    descriptions = response.json()["lots"][0]["descriptions"]
    assert [d["language"] for d in descriptions] == languages
    assert len({d["damages"] for d in descriptions}) == 1 and "[en" not in descriptions[0]["damages"]
    assert model_calls(standin) == 1


def test_the_model_is_asked_for_the_language_the_client_named_under_the_tag_it_sent(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # `tl` is Tagalog in BCP 47; CLDR's alias made it `fil`, so the client found no `tl` description.
    response = sync_gateway.submit(one_lot(images, names=("a.png",)), languages=["EN", "tl", "iw", "prs"])
    assert response.status_code == 200, response.text
    descriptions = response.json()["lots"][0]["descriptions"]
    assert [d["language"] for d in descriptions] == ["en", "tl", "he", "prs"]
    assert descriptions[1]["damages"].startswith("<p>[tl] Standin vision")


def test_a_lot_without_any_reachable_image_fails_without_a_model_call(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    broken = one_lot(images, names=("missing-1.png", "missing-2.png"))
    response = sync_gateway.submit(broken, languages=["en", "de"])
    assert response.status_code == 200
    lot = response.json()["lots"][0]
    assert lot["status"] == "failed" and lot["descriptions"] == [] and lot["processed_images"] == 0
    assert lot["error_message"] == "none of the lot's 2 images could be fetched"
    assert len(lot["missing_images"]) == 2
    assert model_calls(standin) == 0


def test_images_past_50_mb_are_left_out_and_listed_as_missing(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    names = (*(f"photo{i}-9mb.png" for i in range(6)), "small.png")
    response = sync_gateway.submit(one_lot(images, names=names), languages=["en"])
    assert response.status_code == 200
    lot = response.json()["lots"][0]
    # Five 9 MB images make 45 MB: the sixth would cross OpenAI's 50 MB, the small one still fits.
    assert lot["status"] == "completed" and lot["processed_images"] == 6
    assert lot["missing_images"] == [f"{images}/photo5-9mb.png"]
    assert "6 image(s) reviewed" in lot["descriptions"][0]["damages"]


def test_images_whose_head_says_zero_bytes_count_their_real_bytes_toward_the_50_mb(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # A HEAD answering `Content-Length: 0` was believed: each 9 MB image counted 0 bytes, all six
    # (54 MB) went in one request, which OpenAI refuses (50 MB of images a request): a 400 for the
    # lot, a permanent failure in a batch.
    names = (*(f"photo{i}-head0-9mb.png" for i in range(6)), "small.png")
    response = sync_gateway.submit(one_lot(images, names=names), languages=["en"])
    assert response.status_code == 200
    lot = response.json()["lots"][0]
    assert lot["missing_images"] == [f"{images}/photo5-head0-9mb.png"], "more than 50 MB of images sent"
    assert lot["status"] == "completed" and lot["processed_images"] == 6


def test_an_image_openai_cannot_fetch_is_missing_and_the_lot_described_from_the_rest(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # API.md: unreachable images are not an error. OpenAI fetches from its own network, so an
    # image our check reached can still be refused (400 invalid_image_url): the lot failed.
    refused = f"{images}/standin-unfetchable-side.png"
    response = sync_gateway.submit(one_lot(images, names=("front.png", "standin-unfetchable-side.png")),
                                   languages=["en"])
    assert response.status_code == 200, response.text
    lot = response.json()["lots"][0]
    assert lot["status"] == "completed" and lot["processed_images"] == 1, lot
    assert lot["missing_images"] == [refused]
    assert model_calls(standin) == 2  # refused, then asked again without that image
    alone = sync_gateway.submit(one_lot(images, names=("standin-unfetchable-side.png",)), languages=["en"])
    lot = alone.json()["lots"][0]
    assert lot["status"] == "failed" and lot["missing_images"] == [refused] and lot["processed_images"] == 0
    assert "could be fetched" in lot["error_message"]


def test_an_image_openai_cannot_read_and_does_not_name_is_missing_and_the_lot_described(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # "You uploaded an unsupported image" (400 invalid_image_format, `param` null) names no image:
    # a truncated JPEG passes the check, and the lot failed with "the model refused the request".
    unreadable = f"{images}/standin-unsupported-rear.png"
    response = sync_gateway.submit(
        one_lot(images, names=("front.png", "side.png", "standin-unsupported-rear.png")), languages=["en"])
    assert response.status_code == 200, response.text
    lot = response.json()["lots"][0]
    assert lot["status"] == "completed" and lot["processed_images"] == 2, lot
    assert lot["missing_images"] == [unreadable]
    assert "2 image(s) reviewed" in lot["descriptions"][0]["damages"]
    assert model_calls(standin) == 4  # refused whole, then without each image in turn until answered


def test_an_unusable_model_answer_fails_the_lot_with_the_reason_and_no_image_processed(
        sync_gateway: Gateway, images: str) -> None:
    # No description came of the images: a batch lot so failed reports 0; this one reported 3.
    lot_request = one_lot(images, notes="[standin:incomplete]", names=("a.png", "b.png", "c.png"))
    response = sync_gateway.submit(lot_request, languages=["en"])
    assert response.status_code == 200
    lot = response.json()["lots"][0]
    assert lot["status"] == "failed" and "incomplete" in lot["error_message"]
    assert lot["processed_images"] == 0 and lot["missing_images"] == []


def test_a_lot_failed_after_paid_answers_reports_their_usage(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # Its vision and three translation answers were billed, yet the failed lot said nothing of
    # them (a batch lot failed in translation shows its vision's usage).
    standin.faults(untranslated_language="ru")
    response = sync_gateway.submit(one_lot(images), languages=["en", "ru"])
    assert response.status_code == 200, response.text
    lot = response.json()["lots"][0]
    assert lot["status"] == "failed" and "not in the language asked for" in lot["error_message"], lot
    assert model_calls(standin) == 4 and "usage" in lot, lot
    assert lot["processed_images"] == 1  # described in English: its image was processed
    assert lot["usage"]["output_tokens"] > 0 and lot["usage"]["estimated_cost_usd"] > 0


def test_a_model_outage_is_502_openai_unavailable(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    standin.faults(server_error_next=3)
    response = sync_gateway.submit(one_lot(images), languages=["en"])
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "OPENAI_UNAVAILABLE"
    assert response.json()["details"] == {"openai_error": "unavailable"}  # no answer, no usage
    text = httpx2.get(f"{sync_gateway.ops_url}/metrics").text
    assert 'openai_api_errors_total{api="vision",kind="unavailable"} 1.0' in text


def test_a_rate_limited_model_is_502_without_openais_words(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # OpenAI's 429 text names the service's organization and its limits: for the operators' log.
    standin.faults(api_faults=[{"scope": "responses", "kind": "rate_limit", "count": 3}])
    response = sync_gateway.submit(one_lot(images), languages=["en"])
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "OPENAI_UNAVAILABLE" and body["details"]["openai_error"] == "rate_limited"
    assert "org-" not in response.text and "Limit" not in response.text


@pytest.mark.parametrize("kind", ["invalid_api_key", "insufficient_quota"])
def test_a_refused_key_or_quota_is_502_without_openais_words(
        sync_gateway: Gateway, images: str, standin: Standin, kind: str) -> None:
    # The service's key is at fault, not the lot: a 200 with the lot failed was cached under the
    # Idempotency-Key, and it showed the customer OpenAI's message (a masked key in it).
    standin.faults(api_faults=[{"scope": "responses", "kind": kind, "count": 1}])
    response = sync_gateway.submit(one_lot(images), languages=["en"])
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "OPENAI_UNAVAILABLE"
    assert "API key" not in response.text and "sk-" not in response.text


def test_a_lot_the_model_refuses_fails_with_openais_code_not_its_words(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # OpenAI's 400 text went verbatim into the lot's error_message: here it named the configured
    # model ("The requested model '…' does not exist."); others name the account's state.
    model = "o4-mini-acme-private-finetune"
    with running_gateway(settings, engine, model_url=standin.base_url,
                         models=ModelSettings(vision_model=model)) as gw:
        response = gw.submit(one_lot(images), languages=["en"])
    assert response.status_code == 200, response.text
    lot = response.json()["lots"][0]
    assert lot["status"] == "failed"
    refused = "the model refused the request (invalid_request_error: model_not_found)"
    assert lot["error_message"] == refused, lot
    assert model not in response.text
    assert model in caplog.text  # the whole answer is for the operators' log


def test_a_model_that_answers_too_late_is_504_openai_timeout(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    with serve_standin(tmp_path, latency_seconds=5) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url, sync_timeout_s=1.0) as gw:
        response = gw.submit(one_lot(images), languages=["en"])
    assert response.status_code == 504 and response.json()["code"] == "OPENAI_TIMEOUT"


def test_an_idempotent_retry_replays_the_description_without_calling_the_model(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    lots = one_lot(images)
    first = sync_gateway.submit(lots, languages=["en"], headers={"Idempotency-Key": "sync-1"})
    again = sync_gateway.submit(lots, languages=["en"], headers={"Idempotency-Key": "sync-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert model_calls(standin) == 1


def test_past_the_synchronous_rate_limit_the_answer_is_429(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    with running_gateway(settings, engine, model_url=standin.base_url, rate_limit_sync=1) as gw:
        assert gw.submit(one_lot(images), languages=["en"]).status_code == 200
        limited = gw.submit(one_lot(images), languages=["en"])
        assert limited.status_code == 429 and "retry-after" in limited.headers


def test_the_curl_recipe_signed_with_echo_and_openssl_is_answered(
        sync_gateway: Gateway, tmp_path: Path) -> None:
    # Seed 004's synchronous recipe: its example.com images cannot be fetched here, so the lot fails
    # with the reason, which proves the echo-signed body was authenticated and processed.
    script = bash_block_after("#### Синхронная обработка\n")
    script = script.replace("http://localhost:5000", sync_gateway.url)
    request = script[script.index("curl -X POST"):]
    lots = json.loads(request[request.index("-d '") + 4:request.rindex("'")])["lots"]
    as_typed = json.dumps(lots, separators=(",", ":"))
    echo = f"echo '{as_typed}' | openssl dgst -sha256 -hmac \"{sync_gateway.key}\""
    signed = subprocess.run(["bash", "-c", echo + " | sed 's/^.* //'"], capture_output=True, text=True,
                            check=True).stdout.strip()
    answer, statuses = run_recipe(request.replace("calculated_hmac_signature_here", signed), tmp_path)
    assert statuses == [200]
    body = json.loads(answer)
    assert body["processing_mode"] == "synchronous"
    assert body["lots"][0]["lot_id"] == "curl-test-001" and body["lots"][0]["status"] == "failed"
    assert len(body["lots"][0]["missing_images"]) == 2


def _leave_early(gateway: Gateway, lots: list[dict[str, Any]], headers: dict[str, str]) -> None:
    body = {"signature": gateway.lots_signature(lots), "version": "1.0.0", "languages": ["en", "de"],
            "lots": lots}
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", json=body, headers=headers, timeout=0.7)


def test_a_client_that_leaves_without_an_idempotency_key_stops_its_model_calls(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    # Nobody can receive that answer any more (a retry without a key starts afresh): the vision call
    # ran to its end and the translation was paid for after the client had gone.
    with serve_standin(tmp_path, latency_seconds=1.5) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url) as gw:
        _leave_early(gw, one_lot(images), {})
        time.sleep(4.0)  # the vision answer (1.5 s) and a translation (1.5 s) had time to come
        assert slow.stats()["direct_calls"] == {"/v1/responses": 1}
        # With a key the work goes on, and the client's retry gets it without paying again.
        _leave_early(gw, one_lot(images), {"Idempotency-Key": "leaves-1"})
        # Retried as a client does on 409 (still in progress), not after a fixed sleep: on a loaded
        # machine the two calls of 1.5 s each could take longer than the 4 s slept.
        answers: list[httpx2.Response] = []

        def answered() -> bool:
            answers.append(gw.submit(one_lot(images), languages=["en", "de"],
                                     headers={"Idempotency-Key": "leaves-1"}))
            return answers[-1].status_code != 409

        wait_for(answered, "the retry's answer", timeout_s=60, every_s=0.2)
        again = answers[-1]
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true", again.text
        assert slow.stats()["direct_calls"] == {"/v1/responses": 3}


@pytest.mark.parametrize("sent", ["without_its_length", "with_a_large_extra_field"])
def test_a_synchronous_lot_holds_no_intake_place_during_its_model_calls(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path, sent: str) -> None:
    # A body bigger than one lot, or of unknown size (chunked), is admitted like a job's. Once
    # read it was one lot, yet it kept its place for its model calls (up to 300 s): with one
    # place, a streaming client's synchronous lot, or one carrying a large field of its own next
    # to its lot, turned every job away with 503 INTAKE_BUSY.
    lots = one_lot(images)
    with serve_standin(tmp_path, latency_seconds=2.0) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url, intake_slots=1,
                            intake_waiting=0, max_lot_bytes=2000) as gw:
        extra = {"client_note": "x" * 3000} if sent == "with_a_large_extra_field" else {}
        raw = json.dumps({"signature": gw.lots_signature(lots), "version": "1.0.0", "languages": ["en"],
                          "lots": lots, **extra}).encode()
        content = iter([raw]) if sent == "without_its_length" else raw
        answers: list[httpx2.Response] = []
        sending = threading.Thread(target=lambda: answers.append(httpx2.post(
            f"{gw.url}/api/v1/generate-descriptions", content=content, timeout=30)))
        sending.start()
        # The lot is in its model call.
        wait_for(lambda: slow.stats()["direct_calls"], "the synchronous lot to reach the model", timeout_s=10)
        job = gw.submit(make_lots(30))  # bigger than one lot: it needs the place
        sending.join(30)
    assert job.status_code == 201, job.text
    assert answers[0].status_code == 200, answers[0].text
    chunked = answers[0].request.headers.get("transfer-encoding") == "chunked"
    assert chunked == (sent == "without_its_length")


def test_a_described_lot_whose_answer_cannot_be_stored_is_still_answered(
        sync_gateway: Gateway, images: str, standin: Standin) -> None:
    # Storing the answer under its key failed (PostgreSQL blipped) after the model was paid: the
    # client got 503 "try again", and its retry 409 "in progress" for 350 s, then a second run.
    store = sync_gateway.deps.idempotency
    stored = store.complete

    def blip(*args: Any) -> None:
        store.complete = stored  # type: ignore[method-assign]  # once
        raise OperationalError("UPDATE idempotency_keys", {}, Exception("server closed the connection"))

    store.complete = blip  # type: ignore[method-assign, assignment]
    answer = sync_gateway.submit(one_lot(images), languages=["en"], headers={"Idempotency-Key": "blip-1"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["lots"][0]["descriptions"][0]["language"] == "en" and model_calls(standin) == 1
