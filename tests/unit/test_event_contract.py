"""The public event contract: every public event type and version has a released JSON Schema,
and the current models stay compatible with it both ways (a schema registry's FULL rule)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from pydantic import create_model

from lotlens_common.catalogue import PUBLIC_EVENTS
from lotlens_common.envelope import UPCASTERS, caused
from lotlens_common.event_schemas import (
    REMOVED_KNOWINGLY,
    IncompatibleChange,
    field_paths,
    incompatibilities,
    public_schema,
    release,
    schema_path,
)
from lotlens_common.events import Event, JobCompleted, LotFailed, TranslationCompleted
from lotlens_common.model.usage import JobUsage

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "events" / "schemas"
RELEASE = "python -m lotlens_common.event_schemas docs/events/schemas"


def _released(event: type[Event]) -> dict[str, object]:
    path = schema_path(SCHEMAS, event)
    assert path.exists(), f"{event.event_type} v{event.version} has no released schema; run {RELEASE}"
    released: dict[str, object] = json.loads(path.read_text())
    return released


@pytest.mark.parametrize("event", PUBLIC_EVENTS, ids=lambda e: e.event_type)
def test_the_current_model_is_compatible_with_its_released_schema(event: type[Event]) -> None:
    assert incompatibilities(event, _released(event)) == [], (
        "a breaking change to a public event: bump its version and add an upcaster")


@pytest.mark.parametrize("event", PUBLIC_EVENTS, ids=lambda e: e.event_type)
def test_every_older_version_of_a_public_event_has_an_upcaster(event: type[Event]) -> None:
    for version in range(1, event.version):
        assert (event.event_type, version) in UPCASTERS
        assert (SCHEMAS / event.event_type / f"v{version}.json").exists(), "released schemas are kept"


def _variant(base: type[Event], drop: str = "", **fields: object) -> type[Event]:
    """A model like `base` with fields dropped, changed or added: a hypothetical next release."""
    kept = {name: (info.annotation, info) for name, info in base.model_fields.items() if name != drop}
    variant = create_model(base.__name__, __base__=Event, **{**kept, **fields})  # type: ignore[call-overload]
    variant.event_type, variant.version = base.event_type, base.version
    return variant


def test_a_deliberate_breaking_change_fails_the_check() -> None:
    released = _released(JobCompleted)
    renamed = _variant(JobCompleted, drop="processed_lots", completed_lots=(int, ...))
    assert any(p.startswith("FORWARD $.processed_lots") for p in incompatibilities(renamed, released))
    assert any(p.startswith("BACKWARD $.completed_lots") for p in incompatibilities(renamed, released))
    retyped = _variant(JobCompleted, total_lots=(str, ...))
    assert incompatibilities(retyped, released)
    widened = _variant(JobCompleted, status=(Literal["completed", "failed", "cancelled", "expired"], ...))
    assert [p.split(":")[0] for p in incompatibilities(widened, released)] == ["FORWARD $.status"]
    nullable = _variant(TranslationCompleted, descriptions=(dict[str, str] | None, ...))
    assert incompatibilities(nullable, _released(TranslationCompleted))


def test_a_renamed_optional_field_fails_the_check() -> None:
    # Both ways compatible to an open content model, yet an older consumer, which ignores fields
    # it does not know, read the renamed field as its default: `total_lots` 0, silently.
    released = _released(LotFailed)
    renamed = _variant(LotFailed, drop="total_lots", lot_total=(int, 0))
    assert incompatibilities(renamed, released) == [
        "REMOVED $.total_lots: a released field stays; a new name needs a new version"]


def test_a_field_removed_from_a_nested_object_fails_the_check_whatever_the_object_is_named() -> None:
    # Compared by `$defs` name, a renamed nested model hid every field it dropped.
    trimmed = {name: (info.annotation, info) for name, info in JobUsage.model_fields.items()
               if name != "reasoning_tokens"}
    renamed_usage = create_model("JobTotals", **trimmed)  # type: ignore[call-overload]
    changed = _variant(JobCompleted, usage=(renamed_usage | None, None))
    assert incompatibilities(changed, _released(JobCompleted)) == [
        "REMOVED $.usage.reasoning_tokens: a released field stays; a new name needs a new version"]


def test_the_one_field_removed_knowingly_is_the_one_gone_from_a_released_schema() -> None:
    # `by_model` blocks carried `"model": null` until ccd6365; nobody could read a value there.
    released = _released(JobCompleted)
    assert field_paths(released) - field_paths(public_schema(JobCompleted)) == {"$.usage.by_model.*.model"}
    assert set(REMOVED_KNOWINGLY) == {(released["$id"], "$.usage.by_model.*.model")}


def test_an_added_optional_field_passes_the_check() -> None:
    grown = _variant(JobCompleted, expired_lots=(int, 0))
    assert incompatibilities(grown, _released(JobCompleted)) == []


def test_release_refuses_a_breaking_change_and_writes_nothing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(release(tmp_path)) == len(PUBLIC_EVENTS)
    assert release(tmp_path) == []  # nothing changed
    before = {p: p.read_text() for p in tmp_path.rglob("*.json")}
    broken = _variant(JobCompleted, total_lots=(str, ...))
    monkeypatch.setattr("lotlens_common.event_schemas.PUBLIC_EVENTS", (*PUBLIC_EVENTS[:-1], broken))
    with pytest.raises(IncompatibleChange, match="JobCompleted"):
        release(tmp_path)
    assert {p: p.read_text() for p in tmp_path.rglob("*.json")} == before


def test_the_published_schemas_accept_unknown_fields() -> None:
    for event in PUBLIC_EVENTS:
        assert "additionalProperties" not in public_schema(event), event.event_type


def test_events_as_written_validate_against_their_released_schemas() -> None:
    from datetime import UTC, datetime

    import jsonschema

    at = datetime(2026, 3, 1, tzinfo=UTC)
    samples: list[Event] = [
        JobCompleted(job_id="j", status="completed", completed_at=at, total_lots=2, processed_lots=1,
                     failed_lots=1),
        TranslationCompleted(job_id="j", lot_id="l", descriptions={"en": "<p>x</p>", "ru": "<p>у</p>"}),
    ]
    for event in samples:
        jsonschema.validate(event.model_dump(mode="json"), _released(type(event)),
                            format_checker=jsonschema.FormatChecker())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**samples[0].model_dump(mode="json"), "status": "lost"}, _released(JobCompleted))


def test_an_event_id_derived_from_its_cause_is_stable_and_tells_events_apart() -> None:
    ended = JobCompleted(job_id="job-1", status="completed", completed_at=datetime(2026, 3, 1, tzinfo=UTC),
                         total_lots=1, processed_lots=1, failed_lots=0)
    done = TranslationCompleted(job_id="job-1", lot_id="l1", descriptions={"en": "<p>Dent.</p>"})
    first = caused(done, "c1", "collect shard-1 l1")
    # Built again (a restart after the crash): the same id, a valid UUID as the schema says.
    assert caused(done, "c1", "collect shard-1 l1").event_id == first.event_id
    assert str(uuid.UUID(first.event_id)) == first.event_id
    others = {caused(done, "c1", "collect shard-2 l1").event_id,  # the lot retried in a new shard
              caused(done.model_copy(update={"job_id": "job-2"}), "c1", "collect shard-1 l1").event_id,
              caused(ended, "c1", "collect shard-1 l1").event_id}
    assert first.event_id not in others and len(others) == 3
