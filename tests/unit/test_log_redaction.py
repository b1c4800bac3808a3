"""A log line's own text carries no credentials, as its traceback already did not."""

from __future__ import annotations

import json
import logging

from lotlens_common.logs import JsonFormatter

SIGNED = "https://b.example/a.jpg?X-Amz-Credential=AKIA&X-Amz-Signature=S3CRET"
KEY = "Bearer sk-proj-Zq8vT3BlbkFJ1234"


def test_a_warning_quoting_a_signed_url_and_a_key_is_written_without_them() -> None:
    # The consumer loop's "batch of 1 failed (...)" warning quotes the exception's text, which an
    # HTTP library or OpenAI fills with the request's Authorization value or a signed image URL.
    record = logging.LogRecord("lotlens_common.kafka", logging.WARNING, __file__, 1,
                               "batch of %d failed (%s); handling one by one", (1, (
                                   f"could not fetch {SIGNED} (Authorization: {KEY})")),
                               None)
    line = json.loads(JsonFormatter().format(record))
    assert "S3CRET" not in line["msg"] and "AKIA" not in line["msg"] and "sk-proj" not in line["msg"]
    assert line["msg"].startswith("batch of 1 failed (could not fetch https://b.example/a.jpg?")
