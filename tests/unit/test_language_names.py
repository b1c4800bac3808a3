"""The English names LotLens gives language tags, held to langcodes' own `display_name("en")`.

LotLens names tags from its English-only table (language_names_en.json) instead of letting
langcodes load every name in every language; these tests prove the table and the way names are
put together give what langcodes gives, tag for tag, and that the table is the pinned package's.
"""

from __future__ import annotations

import importlib.util
import itertools
import string
from pathlib import Path

import langcodes
import orjson
import pytest

from lotlens_common.model import languages

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "libs/common/src/lotlens_common/model/language_names_en.json"


def _langcodes_name(tag: str) -> str:
    """The name langcodes itself gives, loading every language's names (the reference), to the tag
    as written: normalising would name CLDR's alias (`tl` as Filipino, `agp` as Paranan)."""
    return str(langcodes.Language.get(tag, normalize=False).display_name("en"))


def _tags() -> list[str]:
    names = orjson.loads(TABLE.read_bytes())
    scripts = sorted(code for code in names if len(code) == 4 and code.istitle())
    regions = sorted(code for code in names if (len(code) == 2 and code.isupper()) or code.isdigit())
    # Every two-letter and three-letter language subtag there could be (named or not), ...
    letters = string.ascii_lowercase
    tags = ["".join(p) for n in (2, 3) for p in itertools.product(letters, repeat=n)]
    # ... every script and region after a few languages, ...
    tags += [f"{lang}-{script}" for lang in ("en", "sr", "zh", "az", "qqq") for script in scripts]
    tags += [f"{lang}-{region}" for lang in ("en", "pt", "zh-Hant", "es") for region in regions]
    # ... and forms integrators send: any case, aliases, variants, private use, unknown parts.
    tags += ["PT-br", "iw", "eng", "zh-hant-tw", "sr-latn-rs", "de-CH-1996", "en-Latn", "en-Latn-US",
             "und", "mul", "x-foo", "qaa", "en-XX", "en-Zzzz", "tlh", "zh-yue", "yue-HK", "es-419",
             "sgn-US", "i-klingon", "en-GB-oed", "ja-Jpan-JP", "hy-arevela", "no", "nb", "in", "mo"]
    return tags


def test_every_tag_is_accepted_or_refused_and_named_as_langcodes_names_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tags = _tags()
    ours = [languages.canonical_tag.__wrapped__(tag) for tag in tags]
    with monkeypatch.context() as patched:
        patched.setattr(languages, "_english_name", _langcodes_name)
        theirs = [languages.canonical_tag.__wrapped__(tag) for tag in tags]
    assert [(tag, a, b) for tag, a, b in zip(tags, ours, theirs, strict=True) if a != b] == []
    accepted = sorted({tag for tag in ours if tag is not None})
    assert len(accepted) > 5000  # the comparison covers the languages, not a handful of them
    misnamed = [(tag, languages.language_name.__wrapped__(tag), _langcodes_name(tag)) for tag in accepted
                if languages.language_name.__wrapped__(tag) != _langcodes_name(tag)]
    assert misnamed == []


@pytest.mark.parametrize(("tag", "name"), [
    ("pt-BR", "Portuguese (Brazil)"), ("zh-Hant-TW", "Chinese (Traditional, Taiwan)"),
    ("sr-Latn", "Serbian (Latin)"), ("en-Latn-US", "English (United States)"),
    ("es-419", "Spanish (Latin America)"),
])
def test_names_put_language_script_and_region_together(tag: str, name: str) -> None:
    assert languages.language_name(str(langcodes.standardize_tag(tag))) == name


def test_the_table_is_the_english_column_of_the_pinned_language_data() -> None:
    # After a `language-data` upgrade this fails until `scripts/language_names.py` is run again.
    spec = importlib.util.spec_from_file_location("language_names", ROOT / "scripts/language_names.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert orjson.loads(TABLE.read_bytes()) == script.english_names()
