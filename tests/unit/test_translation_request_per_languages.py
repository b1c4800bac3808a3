"""A job's lots share their languages: what a translation request holds for them (the targets, the
instructions naming each language, the schema) is worked out once per set of languages, not once
per lot, and every request still says the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from lotlens_common.model import prompts, translation
from lotlens_common.model.languages import is_supported_language, language_name
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import target_languages, translation_request_body

# A set no other test asks for, so the first body below is built from scratch.
LANGUAGES = ("en", "hr", "sk", "sl")


def _counted(calls: list[str], named: Callable[[str], Any]) -> Callable[[str], Any]:
    def counting(code: str) -> Any:
        calls.append(code)
        return named(code)
    return counting


def test_a_hundred_lots_name_each_language_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(prompts, "language_name", _counted(calls, language_name))
    monkeypatch.setattr(translation, "language_name", _counted(calls, language_name))
    checked: list[str] = []
    monkeypatch.setattr(translation, "is_supported_language",
                        _counted(checked, is_supported_language))
    bodies = [translation_request_body(f"<p>Dent {lot}.</p>", LANGUAGES, ModelSettings())
              for lot in range(100)]
    # Once for the instructions, kept per set of languages, not 100 times over; and once a body for
    # its schema, built anew for each (`translations_schema`).
    assert sorted(calls) == sorted(["hr", "sk", "sl"] * (1 + len(bodies)))
    assert len(checked) <= len(LANGUAGES)
    first = orjson.loads(orjson.dumps(bodies[0]))
    assert first["instructions"].count('property "') == 3
    assert list(first["text"]["format"]["schema"]["required"]) == ["hr", "sk", "sl"]
    assert all(orjson.dumps({**body, "input": None}) == orjson.dumps({**bodies[0], "input": None})
               for body in bodies)


def test_targets_are_a_fresh_list_each_time() -> None:
    targets = target_languages(["en", "de", "ru"])
    targets.append("fr")
    assert target_languages(("en", "de", "ru")) == ["de", "ru"]


def test_an_unsupported_language_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="unsupported language code: 'xx'"):
            target_languages(["de", "xx"])


def test_a_body_changed_by_its_holder_leaves_the_next_bodies_of_its_languages_as_they_were() -> None:
    settings = ModelSettings()
    changed = translation_request_body("<p>x</p>", ["en", "de"], settings)
    changed["text"]["format"]["schema"]["additionalProperties"] = True
    after = translation_request_body("<p>y</p>", ["en", "de"], settings)
    assert after["text"]["format"]["schema"]["additionalProperties"] is False
