"""A receiver's redirect names where it points, credentials included: the attempt's span, its
recorded error and the dispatcher's log lines say where it pointed without them."""

from __future__ import annotations

import logging

import pytest

from lotlens_common.events import WebhookAttempted, WebhookFailed
from lotlens_common.redaction import REDACTED
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    Reply,
    Request,
    client_secret,
    dispatcher_settings,
    insert_finished_job,
    of,
    publish_completed,
    receiver,
    running,
)
from tests.spans import recording_spans

pytestmark = pytest.mark.integration

SECRETS = ("user:pass", "absolute-secret", "relative-secret", "backslash-secret", "url-secret")
# Where each path redirects to, and how the attempt names it.
LOCATIONS = {"/absolute": ("http://user:pass@127.0.0.1:9/next?token=absolute-secret", f"/next?{REDACTED}"),
             "/relative": ("/next?token=relative-secret", f"/next?{REDACTED}"),
             # Paths to httpx2, a host and its credentials to WHATWG parsers (browsers, Node).
             "/backslash": ("/\\user:pass@127.0.0.1:9/next?token=backslash-secret", REDACTED),
             "/scheme-backslash": ("https:\\\\user:pass@127.0.0.1:9/next?token=backslash-secret", REDACTED)}


def test_a_redirects_location_reaches_no_span_log_or_record_with_its_credentials(config, db, events, caplog):
    caplog.set_level(logging.INFO)  # httpcore2 traces headers at DEBUG; `logs` quiets it

    def respond(request: Request) -> Reply:
        return Reply(302, {"Location": LOCATIONS[request.path.split("?")[0]][0]})

    with receiver(respond) as hooks, recording_spans() as spans:
        urls = [f"{hooks.url}{path}?token=url-secret" for path in LOCATIONS]
        client_secret(db)
        job_id = insert_finished_job(db, [*urls, None])
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-"), webhook_retry_intervals_s=(0.1,)), db):
            seen = events.until(lambda seen: len(of(WebhookFailed, seen)) == len(urls))
    posts = [span for span in spans.get_finished_spans() if span.name == "webhook POST"]
    assert len(posts) == len(urls) * 2
    attempts = [*of(WebhookAttempted, seen), *of(WebhookFailed, seen)]
    errors = [e.error for e in attempts]
    recorded = [
        *(f"{span.status.description} {dict(span.attributes or {})} {span.events}" for span in posts),
        *errors, *(record.getMessage() for record in caplog.records)]
    leaks = [text for text in recorded if any(secret in text for secret in SECRETS)]
    assert leaks == []
    # Still says where it pointed, as far as that is no credential.
    named = {e.webhook_url: LOCATIONS[e.webhook_url.removeprefix(hooks.url).split("?")[0]][1]
             for e in attempts}
    assert all(f"{named[e.webhook_url]} not followed" in str(e.error) for e in attempts), errors
