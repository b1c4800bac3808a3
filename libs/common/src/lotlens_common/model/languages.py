"""Language tags: BCP 47 (`en`, `pt-BR`, `zh-Hant`, `sr-Latn`), checked by `langcodes`, named in
English.

A tag is accepted in any case and kept in its RFC 5646 canonical form, which is what is stored,
echoed and used as the translation's schema key: case (`PT-br` → `pt-BR`) and the IANA registry's
Preferred-Values (`iw` → `he`, `mo` → `ro`), nothing more: `tl` stays Tagalog and `prs` Dari
(tag_registry.py says why CLDR's aliases are not used). A three-letter code where ISO 639-1 has
a two-letter one (`eng`, `per`) is not BCP 47 and is refused; `two_letter_tag` names the tag to
use. Tags that name no language a model could write in are refused too: undetermined or
multiple languages (`und`, `mul`), private use (`x-…`, `qaa`) and unknown regions or scripts
(`en-XX`). Tags that name a collection of languages (`sla`) or a sign language (`ase`) are
known but `not_written`: the gateway refuses them.

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

from lotlens_common.model.tag_registry import (
    is_collection,
    is_sign_language,
    registry_form,
    tag_text,
    two_letter_form,
)

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
    # Not normalised: that would name `tl` Filipino; a script the language is always written in
    # goes unnamed (`en-Latn` → English), as display_name does.
    language = langcodes.Language.get(tag, normalize=False).simplify_script()
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
        language = registry_form(tag)
    except LanguageTagError:
        return None
    # Valid: every subtag is one the registry assigns (`eng`, `jp` and `en-GB-oxenfree` are not).
    if not language.is_valid() or language.private or language.language in _NOT_A_LANGUAGE:
        return None
    canonical = tag_text(language)
    name = _english_name(canonical)
    return None if name is None or "Unknown" in name else canonical


def two_letter_tag(tag: str) -> str | None:
    """The canonical tag to send instead of one led by an ISO 639-2 code (`eng` → `en`, `ger-AT` →
    `de-AT`), or None when the tag has no such code or is wrong in another way too."""
    form = two_letter_form(tag) if len(tag) <= MAX_TAG_CHARS else None
    return canonical_tag(form) if form else None


def not_written(tag: str) -> str | None:
    """Why a known canonical tag names no language a text can be translated into: a collection
    (`sla` Slavic languages, `sgn`, `art`) is many languages, a sign language (`ase`) has no
    written form a model writes; None for any other. Accepted by `canonical_tag` all the same
    (jobs taken before they were refused still read), so the gateway refuses them itself."""
    language = langcodes.Language.get(tag, normalize=False).language or ""
    if is_collection(language):
        return f"{language_name(tag)}: a collection of languages, not one"
    if is_sign_language(language):
        return f"{language_name(tag)}: a sign language, with no written form"
    return None


@lru_cache(maxsize=4096)
def is_english(tag: str) -> bool:
    """Whether a canonical tag asks for the English the vision model writes, nothing to translate:
    `en`, or `en` with the script English is always written in (`en-Latn`). With a region
    (`en-US`, `en-GB`) it asks for that region's spelling and words, which the description
    (`bonnet`, `windscreen`) may not use: translated."""
    if not tag.startswith(ENGLISH):
        return False
    return tag_text(langcodes.Language.get(tag, normalize=False).simplify_script()) == ENGLISH


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
