"""Batch submission through a real gateway: 201, the events on Kafka, and every refusal."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, text

from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import (
    Gateway,
    consume,
    insert_finished_job,
    intake_filled,
    make_lots,
    published_events,
    running_gateway,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


ACCEPTED_FIELDS = {"job_id", "status", "created_at", "total_lots", "languages", "estimated_completion",
                   "processing_mode", "webhook_configured"}


def post_raw(gw: Gateway, body: bytes, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.post(f"{gw.url}/api/v1/generate-descriptions", content=body, headers=headers, timeout=60)


def assert_error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
    return body


def test_a_batch_is_accepted_with_201_and_is_visible_to_polling_at_once(gateway: Gateway) -> None:
    lots = make_lots(3, webhook="https://hooks.example.com/done")
    response = gateway.submit(lots, languages=["en", "de"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == ACCEPTED_FIELDS
    assert body["status"] == "accepted" and body["processing_mode"] == "batch"
    assert body["total_lots"] == 3 and body["languages"] == ["en", "de"]
    assert body["webhook_configured"] is True
    assert body["created_at"].endswith("Z") and body["estimated_completion"] > body["created_at"]
    assert response.headers["location"] == f"/api/v1/batch-status/{body['job_id']}"

    status = gateway.get_job("/api/v1/batch-status/{job_id}", body["job_id"])
    assert status.status_code == 200, status.text
    state = status.json()
    assert state["status"] == "pending" and state["progress"]["total_lots"] == 3
    assert state["processing_details"]["current_stage"] == "queued"
    assert state["languages"] == ["en", "de"] and state["webhook_configured"] is True


def test_language_tags_in_any_case_are_stored_and_echoed_canonical(gateway: Gateway,
                                                                   settings: ServiceSettings) -> None:
    response = gateway.submit(make_lots(2), languages=["EN", "pt-br", "ZH-hant", "sr-latn", "en"])
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    assert response.json()["languages"] == ["en", "pt-BR", "zh-Hant", "sr-Latn"]
    state = gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()
    assert state["languages"] == ["en", "pt-BR", "zh-Hant", "sr-Latn"]
    events = [envelope.event for _key, envelope in
              consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 3)]
    assert isinstance(events[0], JobSubmitted) and events[0].job_id == job_id
    assert events[0].languages == ("en", "pt-BR", "zh-Hant", "sr-Latn")


def test_the_topic_gets_job_submitted_then_one_lot_submitted_per_lot_in_order(
        gateway: Gateway, settings: ServiceSettings) -> None:
    lots = make_lots(3, webhook="https://hooks.example.com/done")
    lots[1]["webhook"] = "https://other.example.com/hook"
    del lots[2]["additional_info"]
    job_id = gateway.submit(lots, languages=["en", "fr"]).json()["job_id"]

    messages = consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 4)
    assert [key for key, _ in messages] == [job_id.encode()] * 4
    envelopes = [envelope for _, envelope in messages]
    assert all(e.client_id == gateway.client_id and e.job_id == job_id for e in envelopes)
    submitted = envelopes[0].event
    assert isinstance(submitted, JobSubmitted)
    assert submitted.client_id == gateway.client_id and submitted.total_lots == 3
    assert submitted.languages == ("en", "fr") and submitted.api_version == "1.0.0"
    assert submitted.webhook_urls == ("https://hooks.example.com/done", "https://other.example.com/hook")
    for seq, (envelope, lot) in enumerate(zip(envelopes[1:], lots, strict=True)):
        event = envelope.event
        assert isinstance(event, LotSubmitted)
        assert event == LotSubmitted(
            job_id=job_id, lot_id=lot["lot_id"], seq=seq, total_lots=3,
            additional_info=lot.get("additional_info", ""), image_urls=tuple(i["url"] for i in lot["images"]),
            languages=("en", "fr"), webhook=lot["webhook"])


def test_the_signature_may_be_bare_hex_or_in_the_x_signature_header(gateway: Gateway) -> None:
    lots = make_lots(2)
    bare = gateway.lots_signature(lots).removeprefix("sha256=")
    body = {"signature": bare, "languages": ["en"], "lots": lots}
    assert post_raw(gateway, json.dumps(body).encode()).status_code == 201
    header_only = {"languages": ["en"], "lots": lots}
    header = {"X-Signature": gateway.lots_signature(lots)}
    response = post_raw(gateway, json.dumps(header_only).encode(), header)
    assert response.status_code == 201, response.text


def test_integers_beyond_64_bits_in_the_lots_still_verify(gateway: Gateway) -> None:
    lots = make_lots(2)
    lots[0]["auction_ref"] = -9223372036854775809  # an extra field the client signed digit for digit
    lots[1]["auction_ref"] = 18446744073709551616
    assert gateway.submit(lots).status_code == 201


@pytest.mark.parametrize("raw", [b"{", b"", b"[]", b'"lots"', b"42", b"null", b'{"lots": [1,]}',
                                 b"[" * 5000 + b"]" * 5000, b'{"lots": "\xff\xfe"}', b"{'lots': []}"])
def test_a_body_that_is_not_a_json_object_is_400_invalid_json(gateway: Gateway, raw: bytes) -> None:
    assert_error(post_raw(gateway, raw), 400, "INVALID_JSON")


NOT_JSON_VALUES = {  # what Python's json module reads and writes, and JSON (RFC 8259, I-JSON) has not
    "NaN": "NaN", "Infinity": "-Infinity", "a number past the double range": "1e400",
    "a lone surrogate": '"dent \\ud800"', "a lone low surrogate": '"\\uDC00 scratch"'}


@pytest.mark.parametrize("value", NOT_JSON_VALUES.values(), ids=NOT_JSON_VALUES.keys())
@pytest.mark.parametrize("where", ["a batch lot", "the one lot", "the languages"])
def test_a_signed_body_with_what_json_has_not_is_400_invalid_json(gateway: Gateway, value: str,
                                                                    where: str) -> None:
    """Signed as a Python client would sign it (its json.dumps writes NaN and lone surrogates),
    such a body once passed the signature and then broke the second parse: a 500."""
    lot_list = make_lots(1 if where == "the one lot" else 2)
    lots_text = json.dumps(lot_list)
    languages = '["en"]'
    if where == "the languages":
        languages = f'["en", {value}]'
    else:
        lots_text = lots_text[:-2] + f', "auction_ref": {value}}}]'
    signature = gateway.lots_signature(json.loads(lots_text))
    raw = f'{{"signature": "{signature}", "languages": {languages}, "lots": {lots_text}}}'.encode()
    body = assert_error(post_raw(gateway, raw), 400, "INVALID_JSON")
    assert "details" in body and body["details"]["problem"]
    # Read like any other body that is not JSON: refused before any key is tried.
    wrongly_signed = raw.replace(signature.encode(), b"sha256=" + b"0" * 64)
    assert_error(post_raw(gateway, wrongly_signed), 400, "INVALID_JSON")


def test_a_surrogate_pair_as_ensure_ascii_writes_an_emoji_is_accepted(gateway: Gateway) -> None:
    lot_list = make_lots(2)
    lot_list[0]["additional_info"] = "Front collision \U0001F697, airbags deployed"
    raw = json.dumps({"signature": gateway.lots_signature(lot_list), "languages": ["en"], "lots": lot_list})
    assert "\\ud83d\\ude97" in raw
    accepted = post_raw(gateway, raw.encode())
    assert accepted.status_code == 201, accepted.text


def test_a_missing_signature_is_401_and_a_wrong_one_403(gateway: Gateway) -> None:
    lots = make_lots(2)
    unsigned = {"languages": ["en"], "lots": lots}
    assert_error(post_raw(gateway, json.dumps(unsigned).encode()), 401, "MISSING_SIGNATURE")
    wrong = {**unsigned, "signature": gateway.lots_signature(lots, key="not-a-client-key")}
    assert_error(post_raw(gateway, json.dumps(wrong).encode()), 403, "INVALID_SIGNATURE")
    tampered = {**unsigned, "signature": gateway.lots_signature(make_lots(2))}
    assert_error(post_raw(gateway, json.dumps(tampered).encode()), 403, "INVALID_SIGNATURE")


def test_unsupported_languages_are_422_with_the_invalid_codes(gateway: Gateway) -> None:
    response = gateway.submit(make_lots(2), languages=["en", "xx", "EN", "deu", "pt-XX", "x-pig"])
    body = assert_error(response, 422, "INVALID_LANGUAGES")
    assert body["details"]["invalid_languages"] == ["xx", "deu", "pt-XX", "x-pig"]
    assert body["details"]["use_instead"] == {"deu": "de"} and "BCP 47" in body["message"]  # `de` only
    eleven = ["en", "de", "fr", "es", "it", "pt", "ru", "pl", "nl", "sv", "fi"]
    body = assert_error(gateway.submit(make_lots(2), languages=eleven), 422, "INVALID_LANGUAGES")
    assert body["details"]["max_allowed"] == 10
    assert_error(gateway.submit(make_lots(2), languages=[]), 422, "INVALID_LANGUAGES")


def test_more_than_50000_lots_is_413_batch_size_exceeded(gateway: Gateway) -> None:
    lots = [{"lot_id": f"l{i}", "images": []} for i in range(50_001)]
    body = assert_error(gateway.submit(lots), 413, "BATCH_SIZE_EXCEEDED")
    assert body["details"] == {"provided_lots": 50_001, "max_allowed": 50_000}


def test_duplicate_lot_ids_are_409_with_the_duplicates(gateway: Gateway) -> None:
    lots = make_lots(4, prefix="dup")
    lots[2]["lot_id"] = lots[3]["lot_id"] = lots[0]["lot_id"]
    body = assert_error(gateway.submit(lots), 409, "DUPLICATE_LOT_ID")
    assert body["details"]["duplicate_lot_ids"] == ["dup-0"]


def test_image_urls_that_are_not_http_are_422_with_the_invalid_urls(gateway: Gateway) -> None:
    lots = make_lots(3)
    lots[0]["images"].append({"url": "ftp://example.com/car.jpg"})
    lots[2]["images"].append({"url": "https://exa mple.com/car.jpg"})
    lots[1]["images"].append({"url": "not a url"})
    # Hosts no resolver can be asked for (an empty label, a label over 63 characters): once
    # accepted, their check raised past the image checker (a UnicodeError from the IDNA codec).
    lots[1]["images"].append({"url": "https://img..example.com/car.jpg"})
    lots[2]["images"].append({"url": f"https://{'a' * 64}.example.com/car.jpg"})
    body = assert_error(gateway.submit(lots), 422, "INVALID_IMAGE_URLS")
    assert body["details"]["invalid_urls"] == ["ftp://example.com/car.jpg", "not a url",
                                               "https://img..example.com/car.jpg",
                                               "https://exa mple.com/car.jpg",
                                               f"https://{'a' * 64}.example.com/car.jpg"]


def test_a_webhook_that_is_not_http_is_422_invalid_webhook_urls(gateway: Gateway) -> None:
    lots = make_lots(2, webhook="https://hooks.example.com/x")
    lots[1]["webhook"] = "javascript:alert(1)"
    body = assert_error(gateway.submit(lots), 422, "INVALID_WEBHOOK_URLS")
    assert body["details"]["invalid_urls"] == ["javascript:alert(1)"]
    lots[1]["webhook"] = "https://.example.com/x"
    body = assert_error(gateway.submit(lots), 422, "INVALID_WEBHOOK_URLS")
    assert body["details"]["invalid_urls"] == ["https://.example.com/x"]


@pytest.mark.parametrize("lots", [
    "not a list",
    [{"lot_id": "a", "images": []}, "not an object"],
    [{"lot_id": "", "images": []}, {"lot_id": "b", "images": []}],
    [{"lot_id": 7, "images": []}, {"lot_id": "b", "images": []}],
    [{"lot_id": "a", "images": "https://x.example/a.jpg"}, {"lot_id": "b"}],
    [{"lot_id": "a", "images": [{"href": "https://x.example/a.jpg"}]}, {"lot_id": "b"}],
    [{"lot_id": "a", "additional_info": 3}, {"lot_id": "b"}],
])
def test_malformed_lots_are_422_validation_error_with_details(gateway: Gateway, lots: Any) -> None:
    body = assert_error(gateway.submit(lots), 422, "VALIDATION_ERROR")
    assert body["details"]["errors"]


def test_a_single_lot_with_more_than_20_images_is_422_too_many_images(gateway: Gateway) -> None:
    body = assert_error(gateway.submit(make_lots(1, images=21)), 422, "TOO_MANY_IMAGES")
    assert body["details"] == {"provided_images": 21, "max_allowed": 20}


def test_a_body_over_the_size_limit_is_413_whether_declared_or_streamed(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, max_body_bytes=2000) as gw:
        lots = make_lots(20)
        assert_error(gw.submit(lots), 413, "PAYLOAD_TOO_LARGE")
        payload = json.dumps({"signature": gw.lots_signature(lots), "lots": lots}).encode()

        def chunks() -> Any:  # no Content-Length: the gateway has to count
            for start in range(0, len(payload), 500):
                yield payload[start:start + 500]

        response = httpx2.post(f"{gw.url}/api/v1/generate-descriptions", content=chunks(), timeout=30)
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_past_the_batch_rate_limit_the_answer_is_429_with_retry_after(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, rate_limit_batch=2, rate_limit_polling=1) as gw:
        assert gw.submit(make_lots(2)).status_code == 201
        job_id = gw.submit(make_lots(2)).json()["job_id"]
        limited = gw.submit(make_lots(2))
        body = assert_error(limited, 429, "RATE_LIMIT_EXCEEDED")
        assert 1 <= int(limited.headers["retry-after"]) <= 60  # at most the window (README)
        assert body["details"]["limit"] == 2 and body["details"]["mode"] == "batch"
        # Limits are per client: the other client still gets in.
        assert gw.submit(make_lots(2), key=gw.other_key).status_code == 201
        # Polling has its own bucket.
        assert gw.get_job("/api/v1/batch-status/{job_id}", job_id).status_code == 200
        assert_error(gw.get_job("/api/v1/batch-status/{job_id}", job_id), 429, "RATE_LIMIT_EXCEEDED")


def test_an_idempotency_key_replays_the_first_answer_and_refuses_another_body(
        gateway: Gateway, settings: ServiceSettings, engine: Engine) -> None:
    lots = make_lots(2)
    key = {"Idempotency-Key": "order-42"}
    first = gateway.submit(lots, headers=key)
    again = gateway.submit(lots, headers=key)
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    replayed = again.headers
    assert replayed["idempotent-replayed"] == "true" and replayed["location"] == first.headers["location"]
    body = assert_error(gateway.submit(make_lots(2), headers=key), 409, "IDEMPOTENCY_KEY_REUSED")
    assert body["details"]["idempotency_key"] == "order-42"
    # Keys belong to a client: another client's "order-42" is another request.
    assert gateway.submit(lots, key=gateway.other_key, headers=key).json()["job_id"] != first.json()["job_id"]
    events = published_events(engine, settings.kafka.bootstrap_servers, settings.topics.submissions)
    job_starts = [e for e in events if isinstance(e.event, JobSubmitted)]
    assert len(job_starts) == 2  # the replay published nothing


def test_a_key_past_its_24_hours_starts_a_new_job_for_the_same_body(gateway: Gateway, engine: Engine) -> None:
    # The job id was derived from the client, the key and the body: once the key had expired, the
    # same order sent again was a "new" job under the old job's id (the new run overwrote its row).
    lots = make_lots(2)
    key = {"Idempotency-Key": "nightly-batch"}
    first = gateway.submit(lots, headers=key)
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' "
                          "WHERE client_id = :c AND key = 'nightly-batch'"), {"c": gateway.client_id})
    again = gateway.submit(lots, headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["job_id"] != first.json()["job_id"]
    replayed = gateway.submit(lots, headers=key)  # and the key now stands for the new job
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["job_id"] == again.json()["job_id"]


def test_a_50000_lot_request_is_accepted_and_every_lot_reaches_kafka(
        gateway: Gateway, settings: ServiceSettings) -> None:
    lots = make_lots(50_000, webhook="https://hooks.example.com/done")
    payload = json.dumps({"signature": gateway.lots_signature(lots), "version": "1.0.0",
                          "languages": ["en", "de", "fr"], "lots": lots}).encode()
    # How fast is the bench's question (`make bench`); here only that it is accepted whole.
    response = post_raw(gateway, payload)
    assert response.status_code == 201, response.text
    events = consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 50_001, timeout_s=120)
    assert len(events) == 50_001
    seqs = [e.event.seq for _, e in events if isinstance(e.event, LotSubmitted)]
    assert seqs == list(range(50_000))


def test_a_job_body_that_arrives_while_the_slot_is_taken_and_one_waits_is_dropped_and_refused_at_once(
        settings: ServiceSettings, engine: Engine) -> None:
    # Bodies were read before they waited for the slot: five 62 MB jobs sent at once held four
    # bodies in memory while the fifth was worked on. Beyond one taken and one waiting, a job's
    # body is now read and dropped as it arrives, and answered 503 without waiting.
    with running_gateway(settings, engine, intake_slots=1, intake_waiting=1, intake_wait_s=10.0,
                         max_lot_bytes=2000) as gw:
        metrics = gw.deps.metrics.registry
        answers: dict[str, httpx2.Response] = {}

        def send(name: str) -> threading.Thread:
            sender = threading.Thread(target=lambda: answers.__setitem__(name, gw.submit(make_lots(30))))
            sender.start()
            return sender

        with engine.connect() as blocker:
            # The first job's one durable write waits for the outbox table, holding the only slot.
            blocker.execute(text("LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE"))
            first = send("first")
            wait_for(lambda: metrics.get_sample_value("lotlens_intake_jobs") == 1, "the first job in intake",
                     timeout_s=20)
            second = send("second")
            wait_for(lambda: metrics.get_sample_value("lotlens_intake_admitted") == 2,
                     "the second job admitted", timeout_s=20)
            refused = gw.submit(make_lots(30))
            blocker.rollback()
        first.join(30)
        second.join(30)
        body = assert_error(refused, 503, "INTAKE_BUSY")
        assert refused.headers["retry-after"] == "10"
        assert body["details"] == {"waited_s": 0.0, "jobs_in_intake": 2}
        assert metrics.get_sample_value("lotlens_intake_busy_total", {"reason": "full"}) == 1
        assert [answers[name].status_code for name in ("first", "second")] == [201, 201]
        with engine.connect() as conn:
            written = text("SELECT count(DISTINCT job_id) FROM outbox WHERE client_id = :c")
            assert conn.execute(written, {"c": gw.client_id}).scalar_one() == 2


def test_job_bodies_are_taken_one_at_a_time_and_one_that_waits_too_long_gets_503(
        settings: ServiceSettings, engine: Engine) -> None:
    # Three 50,000-lot jobs at once took a gateway from 116 MB to 714 MB, past a pod's limit.
    with running_gateway(settings, engine, intake_slots=1, intake_wait_s=1.0, max_lot_bytes=2000) as gw:
        # The first job's one durable write waits for the outbox table, holding the only slot.
        with intake_filled(gw, engine) as taking:
            refused = gw.submit(make_lots(30))
            # A retry of a job's failed lots may hold as many lots as a submission: it needs a slot too.
            earlier = make_lots(3)
            finished = insert_finished_job(engine, gw.client_id, earlier, ["en"],
                                           failed=[earlier[0]["lot_id"]])
            retry_refused = httpx2.post(f"{gw.url}/api/v1/batch-jobs/{finished}/retry-failed",
                                        headers={"X-Signature": gw.sign(finished)}, timeout=30)
        first = taking.result()
        body = assert_error(refused, 503, "INTAKE_BUSY")
        assert refused.headers["retry-after"] == "10"
        assert body["details"] == {"waited_s": 1.0}
        assert_error(retry_refused, 503, "INTAKE_BUSY")
        assert first.status_code == 201, first.text
        # Nothing of the refused job was written; the slot is free again for the next one.
        with engine.connect() as conn:
            written = text("SELECT count(DISTINCT job_id) FROM outbox WHERE client_id = :c")
            jobs_written = conn.execute(written, {"c": gw.client_id}).scalar_one()
        assert jobs_written == 1
        assert gw.submit(make_lots(30)).status_code == 201
