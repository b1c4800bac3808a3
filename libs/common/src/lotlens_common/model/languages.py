"""Language tags: BCP 47 (`en`, `pt-BR`, `zh-Hant`, `sr-Latn`), checked by `langcodes`, named in
English.

A tag is accepted in any case and kept in its canonical form (`PT-br` → `pt-BR`, `iw` → `he`,
`eng` → `en`), which is what is stored, echoed and used as the translation's schema key. Tags
that name no language a model could write in are refused: undetermined or multiple languages
(`und`, `mul`), private use (`x-…`, `qaa`) and unknown regions or scripts (`en-XX`).

The names come from `language_names_en.json`, the English column of `language-data`'s names
(scripts/language_names.py writes it). langcodes' own `display_name` loads every name in every
language, about 270 MB per process, to use one column.
"""

from __future__ import annotations

from functools import cache, lru_cache
from importlib.resources import files

import langcodes
import orjson
from langcodes.tag_parser import LanguageTagError

ENGLISH = "en"
# RFC 5646 §4.4.1: 35 characters hold any tag a registry can give a meaning to.
MAX_TAG_CHARS = 35
_NOT_A_LANGUAGE = frozenset({"und", "mul", "mis", "zxx"})


@cache
def _names() -> dict[str, str]:
    table: dict[str, str] = orjson.loads(files(__package__).joinpath("language_names_en.json").read_bytes())
    return table


def _english_name(tag: str) -> str | None:
    """A canonical tag in English words as langcodes' `display_name("en")` writes it (`zh-Hant-TW`
    → `Chinese (Traditional, Taiwan)`), or None when a part of it has no name."""
    language = langcodes.Language.get(tag)
    codes = [code for code in (language.language or "und", language.script, language.territory) if code]
    names = _names()
    if any(code not in names for code in codes):
        return None
    head, *details = [names[code] for code in codes]
    return f"{head} ({', '.join(details)})" if details else head


@lru_cache(maxsize=4096)
def canonical_tag(tag: str) -> str | None:
    """The canonical form of a known BCP 47 tag (`pt-br` → `pt-BR`), or None when it is not one."""
    if not tag or len(tag) > MAX_TAG_CHARS or "_" in tag:
        return None
    try:
        if not langcodes.tag_is_valid(tag):
            return None
        language = langcodes.Language.get(tag)
    except LanguageTagError:
        return None
    if language.private or language.language in _NOT_A_LANGUAGE:
        return None
    canonical = str(langcodes.standardize_tag(tag))
    name = _english_name(canonical)
    return None if name is None or "Unknown" in name else canonical


def preload() -> None:
    """Load the tag registry and the names now, not on a service's first request or job."""
    canonical_tag(ENGLISH)


def is_supported_language(tag: str) -> bool:
    """True for a known tag already in canonical form (`de`, `pt-BR`; not `DE` nor `xx`)."""
    return canonical_tag(tag) == tag


@lru_cache(maxsize=4096)
def language_name(tag: str) -> str:
    """The tag in English words, language and variant: `pt-BR` → `Portuguese (Brazil)`.

    ValueError for a tag that is not a known canonical one.
    """
    if not is_supported_language(tag):
        raise ValueError(f"unsupported language tag: {tag!r}")
    return _english_name(tag) or tag
