"""Language tags: BCP 47 (`en`, `pt-BR`, `zh-Hant`, `sr-Latn`), checked and named by `langcodes`.

A tag is accepted in any case and kept in its canonical form (`PT-br` → `pt-BR`, `iw` → `he`,
`eng` → `en`), which is what is stored, echoed and used as the translation's schema key. Tags
that name no language a model could write in are refused: undetermined or multiple languages
(`und`, `mul`), private use (`x-…`, `qaa`) and unknown regions or scripts (`en-XX`).
"""

from __future__ import annotations

from functools import lru_cache

import langcodes
from langcodes.tag_parser import LanguageTagError

ENGLISH = "en"
# RFC 5646 §4.4.1: 35 characters hold any tag a registry can give a meaning to.
MAX_TAG_CHARS = 35
_NOT_A_LANGUAGE = frozenset({"und", "mul", "mis", "zxx"})


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
    if language.private or language.language in _NOT_A_LANGUAGE or "Unknown" in language.display_name():
        return None
    return str(langcodes.standardize_tag(tag))


def preload() -> None:
    """Load langcodes' language names now: they load on first use, 0.9 s of CPU that would
    otherwise fall on a service's first request or job."""
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
    return str(langcodes.Language.get(tag).display_name("en"))
