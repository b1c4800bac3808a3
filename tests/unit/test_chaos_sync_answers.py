"""The chaos workload's synchronous calls are judged against what they asked: a wrong 200 (a lot
failed for no documented reason, a language missing) or an error no fault excuses is a violation;
a correct 200 and a retryable error are not. Answers come from a loopback server in the contract's
shape, read by the real client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from chaos.workload import Submitted, sync_call
from lotlens_client import LotLensClient
from tests.servers import serve


class _Gateway(BaseHTTPRequestHandler):
    """Answers every description request with `status` and the body `shape` makes of the lot."""

    status: ClassVar[int] = 200
    shape: ClassVar[Any] = None

    def do_POST(self) -> None:
        lot = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["lots"][0]
        body = json.dumps(type(self).shape(lot)).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        """Quiet: http.server writes each request to stderr."""


def _sync(lot: dict[str, Any], languages: tuple[str, ...] = ("en", "de"), status: str = "completed",
          reason: str | None = None, missing: bool = False) -> dict[str, Any]:
    urls = [image["url"] for image in lot["images"]]
    described = {"lot_id": lot["lot_id"], "status": status, "processed_images": 0 if missing else len(urls),
                 "missing_images": urls if missing else [], "error_message": reason,
                 "descriptions": [{"language": code, "damages": f"<p>Scratch ({code}).</p>"}
                                  for code in languages]}
    return {"version": "2.0", "processing_mode": "synchronous", "total_lots": 1,
            "processed_at": "2026-01-01T00:00:00Z", "lots": [described]}


def _error(status: int, code: str) -> Any:
    return lambda _lot: {"error": "Fault", "message": "fault", "code": code}


@pytest.fixture
def gateway() -> Iterator[LotLensClient]:
    with serve(_Gateway) as url:
        yield LotLensClient(url, "key", timeout=5, max_retries=0)


def _answered(client: LotLensClient, status: int, shape: Any) -> Submitted:
    _Gateway.status, _Gateway.shape = status, staticmethod(shape)
    out = Submitted()
    sync_call(client, "http://127.0.0.1:9/images", out)
    return out


def test_a_sync_200_with_one_description_of_two_is_a_violation(gateway: LotLensClient) -> None:
    out = _answered(gateway, 200, lambda lot: _sync(lot, languages=("en",)))
    assert len(out.sync_wrong) == 1 and "descriptions in ['en']" in out.sync_wrong[0]
    assert out.sync_ok == 0


def test_a_sync_200_failed_for_an_undocumented_reason_is_a_violation(gateway: LotLensClient) -> None:
    out = _answered(gateway, 200, lambda lot: _sync(lot, (), "failed", "the model could not describe it"))
    assert len(out.sync_wrong) == 1 and "undocumented reason" in out.sync_wrong[0]


def test_a_sync_lot_failed_for_its_unreachable_images_is_allowed(gateway: LotLensClient) -> None:
    reason = "none of the lot's 1 images could be fetched"
    out = _answered(gateway, 200, lambda lot: _sync(lot, (), "failed", reason, missing=True))
    assert out.sync_wrong == [] and out.sync_ok == 1


def test_a_complete_sync_answer_passes(gateway: LotLensClient) -> None:
    out = _answered(gateway, 200, _sync)
    assert out.sync_wrong == [] and out.sync_ok == 1


@pytest.mark.parametrize(("status", "code"), [(502, "OPENAI_UNAVAILABLE"), (503, "SERVICE_UNAVAILABLE"),
                                              (504, "OPENAI_TIMEOUT"), (429, "RATE_LIMIT_EXCEEDED")])
def test_a_retryable_error_during_a_fault_is_allowed(gateway: LotLensClient, status: int, code: str) -> None:
    out = _answered(gateway, status, _error(status, code))
    assert out.sync_wrong == [] and out.sync_retryable == 1


@pytest.mark.parametrize(("status", "code"), [(500, "INTERNAL_ERROR"), (422, "VALIDATION_ERROR"),
                                              (403, "INVALID_SIGNATURE")])
def test_an_error_no_fault_excuses_is_a_violation(gateway: LotLensClient, status: int, code: str) -> None:
    out = _answered(gateway, status, _error(status, code))
    assert len(out.sync_wrong) == 1 and f"{status} {code}" in out.sync_wrong[0]
