"""The example subscriber (examples/subscriber) with messages as confluent-kafka hands them out:
what it does with an event version newer than it reads (the whole-stack run is
tests/e2e/test_example_subscriber.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka import Message

from tests.conftest import ROOT

SUBSCRIBER = ROOT / "examples" / "subscriber" / "subscriber.py"


def _subscriber() -> ModuleType:
    spec = importlib.util.spec_from_file_location("subscriber", SUBSCRIBER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _translation(version: int, event_id: str) -> Message:
    envelope = {"event_id": event_id, "type": "TranslationCompleted", "version": version,
                "occurred_at": "2026-03-01T12:00:00+00:00", "job_id": "job-1", "client_id": "c", "trace": {},
                "data": {"job_id": "job-1", "lot_id": "lot-1", "descriptions": {"en": "<p>Dent.</p>"}}}
    return Message(topic="lotlens.translation", partition=0, offset=7, key=b"job-1",
                   value=json.dumps(envelope).encode(), headers=[("type", b"TranslationCompleted")])


def test_a_newer_version_of_a_type_it_reads_is_skipped_with_a_warning_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Skipped in silence, a release that moved TranslationCompleted to version 2 left the
    # subscriber's jobs without results, and nothing said why.
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    with caplog.at_level(logging.WARNING, logger="lotlens-subscriber"):
        subscriber.handle(results, _translation(2, "e-1"))
        subscriber.handle(results, _translation(2, "e-2"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "TranslationCompleted version 2" in warnings[0], warnings
    assert results._db.execute("SELECT count(*) FROM lot_results").fetchone() == (0,)
    subscriber.handle(results, _translation(1, "e-3"))
    stored = results._db.execute("SELECT lot_id, status FROM lot_results").fetchall()
    assert stored == [("lot-1", "completed")]
