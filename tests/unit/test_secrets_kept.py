"""Secrets stay out of what operators and traces see: a refused setting is not echoed back, and a
failed statement's error does not carry the values it was given (image and webhook URLs hold
customers' signed credentials and tokens)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy.exc import DBAPIError

from lotlens_common import db, settings
from lotlens_common.stage import config as stage_config
from lotlens_gateway.config import GatewaySettings
from lotlens_result_store.config import ResultStoreSettings
from lotlens_translator.config import TranslatorSettings
from lotlens_vision_batcher.config import VisionBatcherSettings

KEY = "3f9c2a7e5b1d4c8f9a0b1c2d3e4f5a6b"
SIGNED_URL = "https://lots.example/front.jpg?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=4f0c2b1a9e8d"


def test_a_refused_client_list_does_not_print_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOTLENS_CLIENTS", f'{{"acme": "{KEY}", "beta": ""}}')
    with pytest.raises(ValidationError) as refused:
        GatewaySettings()
    assert "client ids and keys must not be empty" in str(refused.value)
    assert KEY[:8] not in str(refused.value) and KEY[-8:] not in str(refused.value)


@pytest.mark.parametrize("kind", [
    settings.TopicSettings, settings.KafkaSettings, settings.DatabaseSettings, settings.OpenAISettings,
    settings.ServiceSettings, stage_config.StageSettings, GatewaySettings, TranslatorSettings,
    VisionBatcherSettings, ResultStoreSettings])
def test_no_settings_class_echoes_a_refused_value(kind: type[BaseSettings]) -> None:
    assert kind.model_config.get("hide_input_in_errors") is True, kind.__name__


def test_a_failed_statement_carries_no_value_it_was_given() -> None:
    """The engine hides a statement's parameters in its errors, which are logged, put in spans
    and in dead letters' `error` header: a deadlock's text otherwise held every lot's image URLs."""
    engine = db.make_engine(settings.DatabaseSettings(), "secrets-test")
    assert engine.hide_parameters
    # What SQLAlchemy raises when the database refuses a statement, made with the engine's flag.
    failed = DBAPIError.instance("INSERT INTO stage_lots (work) VALUES (%(work)s)", {"work": SIGNED_URL},
                                 Exception("deadlock detected"), Exception,
                                 hide_parameters=engine.hide_parameters)
    assert "deadlock detected" in str(failed) and "X-Amz-Signature" not in str(failed)
