"""`lotlens` on a stdout that cannot hold every character (a Windows console or a redirect in
cp1252, say) prints valid JSON anyway, and a submission names its Idempotency-Key before it is sent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.cli_support import lotlens
from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots, running_gateway
from tests.integration.sync_support import model_calls, one_lot
from tests.standin import Standin

pytestmark = pytest.mark.integration

WINDOWS_REDIRECT = "cp1252"  # no Cyrillic; it has é
NOTES = "Лада Веста, вмятина на двери; café"


def test_russian_results_are_printed_on_a_cp1252_stdout_as_json_escapes(gateway: Gateway,
                                                                        engine: Engine) -> None:
    lot = {**make_lots(1)[0], "additional_info": NOTES}
    job_id = insert_finished_job(engine, gateway.client_id, [lot], ["en", "ru"])

    done = lotlens(gateway, "results", job_id, encoding=WINDOWS_REDIRECT)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["lots"][0]["descriptions"][1] == {"language": "ru", "damages": f"<p>[ru] {NOTES}</p>"}
    # Only what the stream cannot hold is escaped: the é stays readable.
    assert "\\u041b\\u0430\\u0434\\u0430" in done.stdout and "café" in done.stdout

    every = lotlens(gateway, "lots", job_id, "--all", encoding=WINDOWS_REDIRECT)
    assert every.returncode == 0, every.stderr
    assert [json.loads(line)["descriptions"][1]["damages"] for line in every.stdout.splitlines()] == [
        f"<p>[ru] {NOTES}</p>"]


def test_a_lot_described_in_russian_is_printed_and_its_key_named_before_it_is_sent(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str, tmp_path: Path) -> None:
    # The description is paid for when it is answered: losing the answer to the terminal, with no
    # key to send it again with, made the user pay for it twice.
    lot_file = tmp_path / "one.json"
    lot_file.write_text(json.dumps(one_lot(images)), encoding="utf-8")
    with running_gateway(settings, engine, model_url=standin.base_url) as gw:
        done = lotlens(gw, "submit", str(lot_file), "--languages", "en,ru", encoding=WINDOWS_REDIRECT)
        assert done.returncode == 0, done.stderr
        described = json.loads(done.stdout)
        russian = next(d["damages"] for d in described["descriptions"] if d["language"] == "ru")
        assert russian.startswith("<p>[ru] Туангин хитион")  # the stand-in's "Russian"
        named = re.search(r"--idempotency-key ([^\s:]+)", done.stderr)
        assert named is not None, done.stderr
        paid = model_calls(standin)

        again = lotlens(gw, "submit", str(lot_file), "--languages", "en,ru", "--idempotency-key",
                        named.group(1), encoding=WINDOWS_REDIRECT)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout) == described and model_calls(standin) == paid
