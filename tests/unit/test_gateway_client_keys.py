"""The gateway refuses to start on client keys that would let one client act as another or be
guessed: two clients with one key, or a key shorter than the documented minimum. The error names
the clients, never a key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from lotlens_gateway.config import MIN_KEY_CHARS, GatewaySettings

STRONG = "3f9c2a7e5b1d4c8f9a0b1c2d3e4f5a6b7c8d"
OTHER = "9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"


def _refusal(monkeypatch: pytest.MonkeyPatch, clients: dict[str, str]) -> str:
    monkeypatch.setenv("LOTLENS_CLIENTS", json.dumps(clients))
    with pytest.raises(ValidationError) as refused:
        GatewaySettings()
    return str(refused.value)


def test_two_clients_with_one_key_are_refused_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # identify_client took the first client whose key verified: globex's requests were acme's.
    message = _refusal(monkeypatch, {"acme": STRONG, "globex": STRONG, "initech": OTHER})
    assert "acme, globex" in message and "share one key" in message and "initech" not in message
    assert STRONG[:8] not in message and STRONG[-8:] not in message


def test_a_key_shorter_than_the_minimum_is_refused_naming_its_client(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "k3y-0f-31-characters-1234567890"
    assert len(short) == MIN_KEY_CHARS - 1
    message = _refusal(monkeypatch, {"acme": STRONG, "globex": short})
    assert "globex" in message and f"{MIN_KEY_CHARS} characters" in message and "acme" not in message
    assert short not in message and short[:8] not in message


def test_distinct_keys_of_the_minimum_length_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    # The 1.x deployment documented the same minimum: "your-secret-hmac-key-minimum-32-characters-long".
    clients = {"acme": "a" * MIN_KEY_CHARS, "legacy": "your-secret-hmac-key-minimum-32-characters-long"}
    monkeypatch.setenv("LOTLENS_CLIENTS", json.dumps(clients))
    assert GatewaySettings().client_keys() == clients


def test_the_gateway_does_not_start_on_a_shared_key_and_prints_no_key() -> None:
    # Port 0: should it start after all, it takes a free port and the timeout ends it.
    env = {**os.environ, "LOTLENS_CLIENTS": json.dumps({"acme": STRONG, "globex": STRONG}),
           "LOTLENS_GATEWAY_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "lotlens_gateway"], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.returncode != 0
    assert "acme, globex" in done.stderr and "share one key" in done.stderr
    assert STRONG[:8] not in done.stderr + done.stdout


def _next_key_refusal(monkeypatch: pytest.MonkeyPatch, next_keys: dict[str, str]) -> str:
    monkeypatch.setenv("LOTLENS_CLIENT_NEXT_KEYS", json.dumps(next_keys))
    return _refusal(monkeypatch, {"acme": STRONG, "globex": OTHER})


def test_a_next_key_that_is_another_clients_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Taken, a request signed with it would be the first matching client's: one acting as another.
    message = _next_key_refusal(monkeypatch, {"acme": OTHER})
    assert "acme, globex" in message and "share one key" in message and OTHER[:8] not in message


def test_a_next_key_of_an_unknown_client_or_too_short_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = _next_key_refusal(monkeypatch, {"initech": "n" * MIN_KEY_CHARS})
    assert "not in LOTLENS_CLIENTS: initech" in unknown
    short = _next_key_refusal(monkeypatch, {"globex": "k3y-0f-31-characters-1234567890"})
    assert "globex" in short and f"{MIN_KEY_CHARS} characters" in short and "k3y-0f" not in short


def test_a_client_in_rotation_signs_with_its_key_then_its_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    following = "f" * MIN_KEY_CHARS
    monkeypatch.setenv("LOTLENS_CLIENTS", json.dumps({"acme": STRONG, "globex": OTHER}))
    monkeypatch.setenv("LOTLENS_CLIENT_NEXT_KEYS", json.dumps({"acme": following}))
    settings = GatewaySettings()
    assert settings.client_keyring() == [("acme", STRONG), ("globex", OTHER), ("acme", following)]
    assert settings.client_keys() == {"acme": STRONG, "globex": OTHER}  # what webhooks are signed with


# docker-compose.yml's and the local overlay's: public, in the repository.
DEMO_KEY = "demo-shared-key-local-only-not-a-secret"


@pytest.mark.parametrize("model", [{"OPENAI_API_KEY": "sk-real"},
                                   {"OPENAI_API_KEY": "sk-real", "OPENAI_BASE_URL": "https://api.openai.com/v1"},
                                   {"OPENAI_BASE_URL": "https://llm.example/v1"}])
def test_the_public_demo_key_is_refused_when_the_model_calls_leave_the_standin(
        monkeypatch: pytest.MonkeyPatch, model: dict[str, str]) -> None:
    # Anyone who read the repository could submit jobs billed to the service's OpenAI account.
    for name, value in {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", **model}.items():
        monkeypatch.setenv(name, value)
    message = _refusal(monkeypatch, {"demo": DEMO_KEY, "acme": STRONG})
    assert "demo have the public demo key" in message and "acme" not in message
    monkeypatch.setenv("LOTLENS_CLIENT_NEXT_KEYS", json.dumps({"acme": DEMO_KEY}))
    assert "acme have the public demo key" in _refusal(monkeypatch, {"acme": STRONG})


@pytest.mark.parametrize("model", [{}, {"OPENAI_API_KEY": "local-standin",
                                        "OPENAI_BASE_URL": "http://openai-standin:18080/v1"},
                                   {"OPENAI_BASE_URL": "http://openai-standin.lotlens-dev.svc.cluster.local:18080/v1"},
                                   {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:18080/v1"},
                                   {"OPENAI_STANDIN_URL": "http://openai-standin:18080/v1"}])
def test_the_public_demo_key_is_taken_with_the_standin(monkeypatch: pytest.MonkeyPatch,
                                                       model: dict[str, str]) -> None:
    for name, value in {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", **model}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOTLENS_CLIENTS", json.dumps({"demo": DEMO_KEY}))
    assert GatewaySettings().client_keys() == {"demo": DEMO_KEY}
