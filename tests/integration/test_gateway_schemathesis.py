"""Schemathesis against a live gateway: no 5xx, and every answer as the gateway's OpenAPI schema says.

Phases: examples (the schema's own), coverage (boundaries, enums and limits, positive and negative)
and fuzzing (random positive and negative cases, at most `MAX_EXAMPLES` per operation). The stateful
phase is not run: the schema declares no links, so jobs are seeded instead and named by the signing.
The seed is fixed so that a run is reproducible; `LOTLENS_FUZZ_SEED=random` (or a number) explores.

Most generated requests carry no signature or a random one and get 401/403, which the schema
documents. A share of them is signed with a real client's key, as the contract says (a hook picks
the share in the fuzzing phase, a hash of the case in the others): over the path's job id (often
swapped for a seeded running, finished or other client's job), over the raw query string of
`GET /api/v1/batch-jobs`, over the raw body of `test-image-validation` and over the `lots` of a
submission (some made well-formed, with images from a local host, so synchronous mode calls the
OpenAI stand-in and batch mode publishes to Kafka) — so validation, the job views, streamed results
and cancellation run too. A validly signed request must never be refused as unauthenticated.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import httpx2
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine

from lotlens_common import signing
from lotlens_common.settings import ServiceSettings
from tests.conftest import new_id
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    insert_running_job,
    make_lots,
    openapi_document,
    running_gateway,
)
from tests.servers import image_host
from tests.standin import serve_standin

pytestmark = pytest.mark.integration
AnyCase = Case[Any]
T = TypeVar("T")

# Part of the hostile-input suite: more than the default; `LOTLENS_FUZZ_EXAMPLES` raises it further.
MAX_EXAMPLES = int(os.environ.get("LOTLENS_FUZZ_EXAMPLES", "100"))
SEED = 20250805
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Set by the hook, read and removed by the test before the request leaves: how to sign the case.
SIGNING = "X-Test-Signing"
UNSIGNED = "as generated"
JOB_MODES = (UNSIGNED, "signed", "running job", "finished job", "another client's job")
WELL_FORMED = "signed, lots made well-formed"
SUBMIT_MODES = (UNSIGNED, "signed", WELL_FORMED)
OTHER_MODES = (UNSIGNED, "signed")
SUBMIT = "/api/v1/generate-descriptions"
LISTING = "/api/v1/batch-jobs"
IMAGE_CHECK = "/api/v1/test-image-validation"
UNSIGNED_ROUTES = ("/health",)
# No rate limit gets in the way of the deeper paths (429 is covered by the client's tests).
UNLIMITED: dict[str, Any] = {"rate_limit_sync": 1_000_000, "rate_limit_batch": 1_000_000,
                             "rate_limit_polling": 1_000_000, "image_check_timeout_s": 2.0}
# PostgreSQL accepts UTC offsets up to ±15:59 in a timestamp; Python and the gateway take up to ±23:59.
PG_MAX_OFFSET = timedelta(hours=15, minutes=59)


def fuzz_seed() -> dict[str, int]:
    """The `seed` setting: fixed, a number from `LOTLENS_FUZZ_SEED`, or none when it says `random`."""
    chosen = os.environ.get("LOTLENS_FUZZ_SEED", str(SEED))
    return {} if chosen == "random" else {"seed": int(chosen)}


DOCUMENT = openapi_document()
CONFIG = SchemathesisConfig.from_dict({
    **fuzz_seed(),
    "suppress-health-check": ["all"],
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
               "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
})
# Loaded at import, so each operation is its own test (`schemathesis.pytest.from_fixture` fails on
# pytest 9.2: it reads `request.node._nodeid`). The fixture checks the live gateway serves the same.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def modes_for(case: AnyCase) -> tuple[str, ...]:
    """How a case of this operation may be signed."""
    if "job_id" in (case.path_parameters or {}):
        return JOB_MODES
    return SUBMIT_MODES if case.path == SUBMIT else OTHER_MODES


@schema.hook
def flatmap_case(_context: HookContext, case: AnyCase) -> st.SearchStrategy[AnyCase]:
    """Fuzzing: leave the case as generated, or mark it to be validly signed (see `sign`)."""
    return st.sampled_from(modes_for(case)).map(lambda mode: _marked(case, mode))


def _marked(case: AnyCase, mode: str) -> AnyCase:
    case.headers[SIGNING] = mode
    return case


@dataclass(frozen=True)
class Target:
    """The gateway under test, its image host, the seeded jobs, and what each request got."""

    gateway: Gateway
    images: str
    jobs: dict[str, str]
    # (path template, signed, status) of every request sent
    answers: list[tuple[str, bool, int]] = field(default_factory=list)


@pytest.fixture()
def target(settings: ServiceSettings, engine: Engine, tmp_path: Path) -> Iterator[Target]:
    """A gateway whose model is the OpenAI stand-in, with a running and two finished jobs seeded.

    The stand-in holds every model call the fuzzed requests cause to the OpenAI description.
    """
    with (serve_standin(tmp_path) as standin, image_host() as images,
          running_gateway(settings, engine, model_url=standin.base_url, **UNLIMITED) as gateway):
        assert httpx2.get(f"{gateway.url}/openapi.json").json() == DOCUMENT
        jobs = {
            "running job": insert_running_job(engine, gateway.client_id, status="translating"),
            "finished job": insert_finished_job(engine, gateway.client_id, make_lots(3), ["en", "de"]),
            "another client's job": insert_finished_job(engine, gateway.other_id, make_lots(2), ["en"]),
        }
        running = Target(gateway, images, jobs)
        yield running
    # Without signed requests the deeper paths would never have run.
    signable = [signed for path, signed, _status in running.answers if path not in UNSIGNED_ROUTES]
    assert not signable or any(signable), "no request of this operation was validly signed"


def _sent(case: AnyCase, base_url: str) -> requests.PreparedRequest:
    """The request exactly as schemathesis will send it (to sign its query string or body)."""
    sent = case.as_transport_kwargs(base_url=base_url)
    return requests.Request(method=sent["method"], url=sent["url"], headers=sent["headers"],
                            params=sent.get("params"), json=sent.get("json"), data=sent.get("data")).prepare()


def _well_formed(body: dict[str, Any], images: str) -> dict[str, Any]:
    """The body with valid languages, unique lot ids, http(s) webhooks and images the host serves.

    (An empty `Idempotency-Key` is dropped too: the schema does not say it needs 1 to 255 characters.)
    """
    given = body.get("lots")
    lots: list[Any] = given if isinstance(given, list) and given else [{}]
    made = []
    for i, lot in enumerate(lots):
        lot = dict(lot) if isinstance(lot, dict) else {}
        webhook = lot.pop("webhook", None)
        lot.update(lot_id=f"lot-{i}", images=[{"url": f"{images}/lot-{i}-{n}.png"} for n in range(2)])
        if isinstance(webhook, str) and webhook.startswith(("http://", "https://")):
            lot["webhook"] = webhook
        made.append(lot)
    return {**body, "languages": ["en", "de"], "lots": made}


def chosen_mode(case: AnyCase) -> str:
    """The fuzzing hook's choice, or (examples and coverage, which run no hook) a hash of the case."""
    mode = case.headers.pop(SIGNING, None)
    if isinstance(mode, str):
        return mode
    modes = modes_for(case)
    fingerprint = repr((case.method, case.path, case.path_parameters, case.query, case.headers, case.body))
    return modes[zlib.crc32(fingerprint.encode()) % len(modes)]


def sign(case: AnyCase, target: Target, mode: str) -> bool:
    """Sign the case the way `mode` says; True when the request now carries a valid signature."""
    gateway, headers = target.gateway, case.headers
    if mode == UNSIGNED or case.path in UNSIGNED_ROUTES:
        return False
    if "job_id" in (case.path_parameters or {}):
        if mode in target.jobs:
            case.path_parameters = {**case.path_parameters, "job_id": target.jobs[mode]}
        # Path parameters are kept percent-encoded; the gateway verifies the decoded path segment.
        position = case.path.split("/").index("{job_id}")
        sent_path = urlsplit(str(_sent(case, gateway.url).url)).path
        headers["X-Signature"] = gateway.sign(unquote(sent_path.split("/")[position]))
    elif case.path == SUBMIT:
        if not isinstance(case.body, dict):
            return False
        body = dict(case.body)
        if mode == WELL_FORMED:
            body = _well_formed(body, target.images)
            key = headers.get("Idempotency-Key")
            if key is not None and not (str(key).strip() and len(str(key)) <= 255):
                del headers["Idempotency-Key"]
        body["signature"] = signing.sign(gateway.key, signing.lots_messages(body.get("lots"))[0])
        case.body = body
    elif case.path == LISTING:
        headers["X-Signature"] = gateway.sign(urlsplit(str(_sent(case, gateway.url).url)).query)
    elif case.path == IMAGE_CHECK:
        raw = _sent(case, gateway.url).body
        headers["X-Signature"] = gateway.sign(raw if isinstance(raw, bytes) else (raw or "").encode())
    else:
        return False  # a route this test does not know how to sign
    return True


@schema.parametrize()
def test_the_gateway_answers_every_request_as_its_schema_says(case: AnyCase, target: Target) -> None:
    mode = chosen_mode(case)
    signed = sign(case, target, mode)
    response = case.call_and_validate(base_url=target.gateway.url, checks=CHECKS, timeout=60)
    target.answers.append((case.path, signed, response.status_code))
    if signed and response.status_code in (401, 403):
        pytest.fail(f"a validly signed request was refused with {response.status_code} {response.text[:300]}:"
                    f"\n{case.as_curl_command(base_url=target.gateway.url)}")


# Problems schemathesis found in the gateway (and their siblings), now fixed: each stays as a
# regression test. Each asks a gateway that has stopped before the assertion: after a 500 its
# server thread logs the traceback, and CPython 3.11.7 formats traceback carets with `ast.parse`,
# which is not thread-safe against pytest's own `ast.parse` of a failure report
# ("SystemError: AST constructor recursion depth mismatch").

def answers(settings: ServiceSettings, engine: Engine, ask: Callable[[Gateway], T]) -> T:
    """What `ask` got from a fresh gateway, returned once that gateway has stopped."""
    with running_gateway(settings, engine) as gateway:
        return ask(gateway)


@pytest.mark.parametrize("query", ["created_after=2025-08-05T10%3A00%3A00%2B16%3A00",
                                   "created_before=2025-08-05T10%3A00%3A00-22%3A24",
                                   # In UTC these fall before year 1 and after year 9999 (a 500 once).
                                   "created_after=0001-01-01T00%3A00%3A00%2B14%3A00",
                                   "created_before=9999-12-31T23%3A59%3A59-14%3A00",
                                   "created_after=0001-01-01T00%3A00%3A00Z&created_before=9999-12-31T23%3A59%3A59"])
def test_a_listing_filter_with_a_far_utc_offset_is_normalised_to_utc(
        settings: ServiceSettings, engine: Engine, query: str) -> None:
    response = answers(settings, engine, lambda gateway: gateway.list_jobs(query))
    assert response.status_code == 200, response.text


def test_a_listing_offset_beyond_postgres_bigint_is_refused(settings: ServiceSettings,
                                                            engine: Engine) -> None:
    # Found by schemathesis as a 500 (`bigint out of range`); the gateway now bounds `offset`.
    response = answers(settings, engine, lambda gateway: gateway.list_jobs(f"offset={2**63}"))
    assert response.status_code == 422, response.text


def test_a_batch_whose_version_holds_a_nul_is_refused_before_anything_is_published(
        settings: ServiceSettings, engine: Engine) -> None:
    response = answers(settings, engine, lambda gateway: gateway.submit(make_lots(2), version="1.0\u0000"))
    assert response.status_code == 422, response.text


def test_a_sync_lot_with_a_nul_is_refused_and_leaves_its_idempotency_key_usable(
        settings: ServiceSettings, engine: Engine) -> None:
    lot = make_lots(1)
    lot[0]["lot_id"] = "sync\u0000lot"
    key = {"Idempotency-Key": new_id("key-")}
    first, retry = answers(settings, engine, lambda gateway: (gateway.submit(lot, headers=key),
                                                              gateway.submit(lot, headers=key)))
    assert first.status_code == 422, first.text
    assert retry.status_code == 422, retry.text


@pytest.mark.parametrize(("method", "template"), [("GET", "/api/v1/batch-status/{}"),
                                                  ("GET", "/api/v1/batch-results/{}"),
                                                  ("POST", "/api/v1/batch-jobs/{}/cancel")])
def test_a_job_id_holding_a_nul_is_not_found(settings: ServiceSettings, engine: Engine,
                                                           method: str, template: str) -> None:
    def ask(gateway: Gateway) -> httpx2.Response:
        return httpx2.request(method, gateway.url + template.format("job%00id"),
                             headers={"X-Signature": gateway.sign("job\x00id")})

    response = answers(settings, engine, ask)
    assert response.status_code == 404, response.text
