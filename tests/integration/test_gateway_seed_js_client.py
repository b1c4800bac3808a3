"""Seed 003's Node.js client against a real gateway: as printed it signs its lots with every field
dropped (`[{},{}]`), which must stay refused; the 403 says so, and the one-line fix docs/MIGRATING.md
gives (Must change 8) makes it submit. The client runs in node, `node-fetch` being node's own fetch."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_support import Gateway, make_lots
from tests.seeds import block_after

pytestmark = pytest.mark.integration

MIGRATING = Path(__file__).resolve().parents[2] / "docs" / "MIGRATING.md"
PRINTED = "? JSON.stringify(data.lots, Object.keys(data.lots).sort())"
CALL = """
const [baseUrl, key, call, cars] = process.argv.slice(2);
const client = new GenerationServiceClient(baseUrl, key);
const lots = JSON.parse(cars);
(call === 'sync'
    ? client.syncGenerate(lots[0].lotId, lots[0].additionalInfo, lots[0].imageUrls, ['en'])
    : client.batchGenerate(lots, ['en'])
).then(answer => console.log(JSON.stringify(answer)));
"""


def seed_js_client(tmp_path: Path, fixed: bool = False) -> Path:
    """The seed's client class in a script that makes one call (its `main()` is not run); with
    `fixed`, `generateSignature`'s line replaced by the one docs/MIGRATING.md gives."""
    source = block_after("### Node.js/JavaScript интеграция", "javascript")
    assert PRINTED in source
    if fixed:
        source = source.replace(PRINTED, block_after("### 8. Seed 003's JavaScript", "javascript",
                                                     MIGRATING).strip())
    package = tmp_path / "node_modules" / "node-fetch"
    package.mkdir(parents=True, exist_ok=True)
    (package / "index.js").write_text("module.exports = (...args) => fetch(...args);\n", encoding="utf-8")
    script = tmp_path / ("fixed.js" if fixed else "printed.js")
    script.write_text(source.replace("main().catch(console.error);", CALL), encoding="utf-8")
    return script


def run(gateway: Gateway, script: Path, call: str, lots: list[dict[str, Any]]) -> dict[str, Any]:
    """What the seed's method resolved to."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node (Debian's nodejs) to run the seed's JavaScript client")
    cars = [{"lotId": lot["lot_id"], "additionalInfo": lot["additional_info"],
             "imageUrls": [image["url"] for image in lot["images"]]} for lot in lots]
    done = subprocess.run([node, str(script), gateway.url, gateway.key, call, json.dumps(cars)],
                          cwd=script.parent, capture_output=True, text=True, timeout=60, check=True)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_the_printed_js_client_is_refused_and_told_its_lots_were_signed_with_their_fields_dropped(
        gateway: Gateway, tmp_path: Path) -> None:
    script = seed_js_client(tmp_path)
    batch = run(gateway, script, "batch", make_lots(2))
    assert batch["jobId"] is None
    sync = run(gateway, script, "sync", make_lots(1))
    assert sync["status"] == 403
    for body in (json.loads(batch["error"]), sync["data"]):
        assert body["code"] == "INVALID_SIGNATURE"
        assert "every field of every lot dropped" in body["details"].get("signed_instead", ""), body
        assert "JSON.stringify(lots)" in body["details"]["signed_message"]
        assert "sign JSON.stringify(lots)" in body["message"]
        assert gateway.key not in json.dumps(body) and gateway.client_id not in json.dumps(body)


def test_the_js_client_with_the_fix_migrating_gives_submits_in_any_script(
        gateway: Gateway, tmp_path: Path) -> None:
    lots = make_lots(2)
    lots[1]["additional_info"] = "Citroën C4, удар спереди, 前部損傷"
    answer = run(gateway, seed_js_client(tmp_path, fixed=True), "batch", lots)
    assert answer["error"] is None and answer["jobId"], answer
    status = gateway.get_job("/api/v1/batch-status/{job_id}", answer["jobId"]).json()
    assert status["progress"]["total_lots"] == 2


def test_a_wrong_signature_is_told_only_what_is_expected(gateway: Gateway) -> None:
    # The mistake is named only when a client's key signed the emptied array; a signature made
    # with any other key, or over anything else, hears what is expected and nothing more.
    lots = make_lots(2)
    for signature in (gateway.sign("[{},{}]", key="not-a-client-key"), gateway.sign("[{}]")):
        body = gateway.submit(lots, signature=signature).json()
        assert body["code"] == "INVALID_SIGNATURE" and "signed_instead" not in body["details"], body
        assert "sort_keys=True" in body["details"]["signed_message"]
