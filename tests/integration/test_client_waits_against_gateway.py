"""What a caller of the SDK and of `lotlens` meets when a wait or a description cannot end well,
against a real gateway (uvicorn, Kafka, PostgreSQL, the OpenAI stand-in): a gateway gone for good
during `--wait`, a submission whose answer never comes, a description longer than the proxy in front
of the gateway waits, one longer than its caller's deadline, and one sent again after a 429."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_client import LotLensClient, NetworkError, ValidationError, WaitTimeoutError, cli
from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, make_lots, running_gateway
from tests.integration.test_client_resends_against_gateway import outbox_locked
from tests.servers import image_host
from tests.standin import Standin, serve_standin

pytestmark = pytest.mark.integration


def lots_file(tmp_path: Path, count: int) -> str:
    path = tmp_path / "lots.json"
    path.write_text(json.dumps(make_lots(count)), encoding="utf-8")
    return str(path)


def test_a_wait_whose_gateway_went_away_says_why_then_ends_in_wait_timeout_naming_the_job(
        settings: ServiceSettings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Old: nothing on stderr while every poll failed, then "lotlens: - NETWORK_ERROR: ConnectError"
    # at the deadline: not a WaitTimeoutError, and no word of the job that goes on.
    stack = ExitStack()
    gateway = stack.enter_context(running_gateway(settings, engine))

    def pause(seconds: float) -> None:
        stack.close()  # after the first poll's answer: the gateway is gone for good
        time.sleep(seconds)

    monkeypatch.setenv(cli.KEY_ENV, gateway.key)
    monkeypatch.setattr(cli, "LotLensClient", partial(LotLensClient, sleep=pause))
    with stack:
        status = cli.main(["--url", gateway.url, "submit", lots_file(tmp_path, 2), "--wait",
                           "--poll-interval", "0.5", "--wait-timeout", "5"])
    err = capsys.readouterr().err
    accepted = re.search(r"^job (\S+): 2 lots accepted$", err, re.M)
    assert accepted is not None, err
    job_id = accepted.group(1)
    assert status == 1, err
    assert err.count("status polls are failing") == 1 and "ConnectError" in err
    assert f"WAIT_TIMEOUT: Job {job_id}: no status poll answered" in err
    assert err.endswith(f"lotlens: job {job_id} continues; `lotlens status {job_id}`\n")


def test_the_sdks_wait_on_a_gateway_gone_for_good_raises_wait_timeout_caused_by_the_last_poll(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine) as gateway, LotLensClient(gateway.url, gateway.key) as sdk:
        job_id = sdk.submit_job(make_lots(2)).job_id
        url, key = gateway.url, gateway.key
    with LotLensClient(url, key) as sdk, pytest.raises(WaitTimeoutError) as raised:
        sdk.wait_for_job(job_id, poll_interval_s=0.5, timeout_s=1.5)
    assert isinstance(raised.value.__cause__, NetworkError) and raised.value.details["job_id"] == job_id


def test_the_resend_hint_of_a_submission_without_an_answer_says_how_long_the_key_holds(
        gateway: Gateway, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Old: "send it again with --idempotency-key K (never carried out twice)"; the gateway forgets
    # a key after 24 h and carries out anew one whose attempt died with its gateway (~6 minutes).
    monkeypatch.setenv(cli.KEY_ENV, gateway.key)
    monkeypatch.setattr(cli, "LotLensClient", partial(LotLensClient, sleep=lambda _s: None))
    with outbox_locked(engine):
        status = cli.main(["--url", gateway.url, "--timeout", "1", "submit", lots_file(tmp_path, 2)])
    err = capsys.readouterr().err
    assert status == 1 and "IDEMPOTENCY_KEY_IN_PROGRESS" in err, err
    assert "never carried out twice" not in err
    assert "within 24 h" in err and "about 6 minutes" in err


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url


def one_lot(images: str) -> dict[str, Any]:
    return {"lot_id": "sync-1", "additional_info": "2019 Toyota Camry, front collision",
            "images": [{"url": f"{images}/front.png"}]}


class ProxyGivesUpFirst(httpx2.HTTPTransport):
    """The gateway behind a proxy that gives up on the first description after `after_s`."""

    def __init__(self, after_s: float) -> None:
        super().__init__()
        self.after_s, self.sent = after_s, 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        if self.sent == 1:
            request.extensions["timeout"] = {**request.extensions["timeout"], "read": self.after_s}
        return super().handle_request(request)


def model_calls(standin: Standin) -> int:
    return sum(standin.stats()["direct_calls"].values())


def short_pauses(slept: list[float], seconds: float) -> None:
    """Record the pause asked for, sleep a fraction of it: the gateway's clock is real."""
    slept.append(seconds)
    time.sleep(min(seconds, 0.2))


def test_a_description_longer_than_the_proxy_waits_is_waited_out_and_paid_once(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    # Old: the resend met 409 in progress three times (5 s each) and the SDK raised
    # IDEMPOTENCY_KEY_IN_PROGRESS while the gateway was still describing the lot.
    slept: list[float] = []
    # The cut comes after the gateway has reserved the key (milliseconds), long before the answer.
    with serve_standin(tmp_path, latency_seconds=4) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url) as gw, \
            LotLensClient(gw.url, gw.key, transport=ProxyGivesUpFirst(1.5),
                          sleep=partial(short_pauses, slept)) as sdk:
        lot = sdk.describe_lot(one_lot(images), ["en"])
        assert lot.status == "completed" and model_calls(slow) == 1
    assert slept[0] == 1.0 and len(slept) > 4 and set(slept[1:]) == {5.0}


def test_a_description_past_its_deadline_ends_naming_its_key_and_the_key_gets_it_unpaid_later(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    # Old: no deadline_s (TypeError); the SDK blocked up to 4 x 310 s against a hung description.
    # The outcome is what counts: the call ends long before the description would, naming its key.
    # Its last error is the 409 "in progress" when a resend fits in the deadline, or the first
    # attempt's NetworkError when a loaded host spent the deadline on that one (with a 1 s cut inside
    # a 3 s deadline this turned the expected ValidationError into a NetworkError under load).
    with serve_standin(tmp_path, latency_seconds=15) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url) as gw:
        with LotLensClient(gw.url, gw.key, transport=ProxyGivesUpFirst(1.0),
                           sleep=partial(short_pauses, [])) as sdk:
            started = time.monotonic()
            with pytest.raises((ValidationError, NetworkError)) as raised:
                sdk.describe_lot(one_lot(images), ["en"], deadline_s=6)
            assert time.monotonic() - started < 60  # generous: the point is 6 s, not 1,247 s
        if isinstance(raised.value, ValidationError):
            assert raised.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS"
        assert model_calls(slow) <= 1  # the description is under way once, not started again
        key = raised.value.idempotency_key
        assert key is not None
        with LotLensClient(gw.url, gw.key) as sdk:
            lot = sdk.describe_lot(one_lot(images), ["en"], idempotency_key=key)
        assert lot.status == "completed" and model_calls(slow) == 1


def test_a_description_sent_after_a_429_gets_its_whole_deadline(
        settings: ServiceSettings, engine: Engine, images: str, tmp_path: Path) -> None:
    # Old: the deadline ran from the 429 (nothing written): the attempt after its ~5 s wait got
    # about 1 s of a 6 s deadline for a 3 s description, and ended in NetworkError ReadTimeout.
    slept: list[float] = []

    def pause(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)  # the gateway's window is real time

    with serve_standin(tmp_path, latency_seconds=3) as slow, \
            running_gateway(settings, engine, model_url=slow.base_url, rate_limit_sync=1,
                            rate_limit_window_s=15) as gw, \
            LotLensClient(gw.url, gw.key, sleep=pause) as sdk:
        assert sdk.describe_lot(one_lot(images), ["en"]).status == "completed"  # the window's one
        lot = sdk.describe_lot(one_lot(images), ["en"], deadline_s=6)
        assert lot.status == "completed" and model_calls(slow) == 2
    assert slept and max(slept) >= 3, "the second description met the 429 and waited it out"
