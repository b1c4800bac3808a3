"""A client's shared key rotated with an overlap: while `LOTLENS_CLIENT_NEXT_KEYS` names its next
key, a request signed with either key is the client's, on every kind of signed request.

With one key a client, a rotation was a flag day: every gateway replica and the client had to
switch at once, and through a rolling restart some replicas refused each key (403).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    make_lots,
    new_key,
    running_gateway,
)

pytestmark = pytest.mark.integration

NEXT_KEY = new_key()


@pytest.fixture()
def rotating(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway whose main client is being rotated to NEXT_KEY."""
    with running_gateway(settings, engine, client_id="rotating-acme",
                         client_next_keys={"rotating-acme": NEXT_KEY}) as gw:
        yield gw


def test_either_key_of_a_client_in_rotation_signs_its_requests(rotating: Gateway, engine: Engine,
                                                               images: str) -> None:
    gw = rotating
    job_id = insert_finished_job(engine, gw.client_id, make_lots(2), ["en"])
    for key in (gw.key, NEXT_KEY):
        status = gw.get_job("/api/v1/batch-status/{job_id}", job_id, key=key)
        assert status.status_code == 200, status.text
        listed = gw.list_jobs("limit=100", key=key)
        assert listed.status_code == 200 and job_id in [job["id"] for job in listed.json()["jobs"]]
        accepted = gw.submit(make_lots(2), key=key)
        assert accepted.status_code == 201, accepted.text
        mine = gw.get_job("/api/v1/batch-status/{job_id}", accepted.json()["job_id"], key=gw.key)
        assert mine.status_code == 200, mine.text  # the job is the client's, whichever key signed it
        raw = json.dumps({"urls": [f"{images}/car-1.png"]}).encode()
        checked = httpx2.post(f"{gw.url}/api/v1/test-image-validation", content=raw, timeout=30,
                              headers={"X-Signature": gw.sign(raw, key)})
        assert checked.status_code == 200, checked.text


def test_a_next_key_is_its_clients_alone(rotating: Gateway, engine: Engine) -> None:
    gw = rotating
    job_id = insert_finished_job(engine, gw.client_id, make_lots(2), ["en"])
    others = insert_finished_job(engine, gw.other_id, make_lots(2), ["en"])
    assert gw.get_job("/api/v1/batch-status/{job_id}", others, key=NEXT_KEY).status_code == 404
    assert gw.get_job("/api/v1/batch-status/{job_id}", job_id, key=gw.other_key).status_code == 404
    stranger = gw.get_job("/api/v1/batch-status/{job_id}", job_id, key=new_key())
    assert stranger.status_code == 403 and stranger.json()["code"] == "INVALID_SIGNATURE"
