"""`lotlens-admin dlq show` prints a dead letter for an operator's terminal (and the support
ticket it is pasted into): the customers' signed image URLs and webhook tokens stay out unless
asked for with --reveal."""

from __future__ import annotations

import json

import pytest

from lotlens_admin import dlq
from lotlens_admin.cli import main

SIGNED = "https://lots.example/front.jpg?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=4f0c2b1a9e8d"
HOOK = "https://hooks.customer.example/lotlens?token=s3cr3t"


def letters(*_args: object, **_kwargs: object) -> dlq.Letters:
    message = {"type": "LotSubmitted", "job_id": "job-1",
               "data": {"lot_id": "L1", "image_urls": [SIGNED], "webhook": HOOK}}
    return dlq.Letters([dlq.DeadLetter(
        position="0:7", group="lotlens-vision-batcher", reason="handler-failed",
        error=f"could not fetch {SIGNED}", source="lotlens.submissions:3:41", key=b"job-1",
        value=json.dumps(message).encode(), headers=[("type", b"LotSubmitted")])], {})


def test_show_keeps_url_credentials_out_unless_revealed(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dlq, "read_letters", letters)
    assert main(["dlq", "show", "0:7"]) == 0
    shown = capsys.readouterr().out
    assert "X-Amz-Signature" not in shown and "s3cr3t" not in shown
    assert "https://lots.example/front.jpg?" in shown and "https://hooks.customer.example/lotlens?" in shown
    assert json.loads(shown)["message"]["data"]["lot_id"] == "L1"

    assert main(["dlq", "show", "0:7", "--reveal"]) == 0
    revealed = capsys.readouterr().out
    assert SIGNED in revealed and HOOK in revealed


@pytest.mark.parametrize("url", ["HTTPS://b.example/a.jpg?X-Amz-Signature=S3CRET",
                                 "Https://user:S3CRET@hooks.example/lotlens", "hTtP://b.example/a.jpg?sig=S3CRET",
                                 "https://user:pw@b.example/a.jpg?X-Amz-Signature=S3CRET"])
@pytest.mark.parametrize("command", [["dlq", "show", "0:7"], ["dlq", "list", "--json"]])
def test_url_credentials_stay_out_whatever_the_case_of_the_scheme(
        url: str, command: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Intake takes a URL scheme in any case, so dead letters hold such URLs.
    def upper_case_letters(*_args: object, **_kwargs: object) -> dlq.Letters:
        message = {"type": "LotSubmitted", "job_id": "job-1", "data": {"image_urls": [url], "webhook": url}}
        return dlq.Letters([dlq.DeadLetter(
            position="0:7", group="lotlens-vision-batcher", reason="handler-failed",
            error=f"could not fetch {url}", source="lotlens.submissions:3:41", key=b"job-1",
            value=json.dumps(message).encode(), headers=[("type", b"LotSubmitted")])], {})

    monkeypatch.setattr(dlq, "read_letters", upper_case_letters)
    assert main(command) == 0
    shown = capsys.readouterr().out
    assert "S3CRET" not in shown
    assert url.split("://")[0] + "://" in shown
