"""RFC 5646 canonical form from the IANA Language Subtag Registry alone, and the two-letter code
BCP 47 registers in place of an ISO 639-2 one.

langcodes normalises with CLDR's aliases laid over the registry's (`standardize_tag`, and
`Language.get` unless told `normalize=False`): `tl` → `fil`, `prs` → `fa-AF`, `sh` → `sr-Latn`,
`eng` → `en`. Those aliases choose a locale for software, not the tag the client wrote: a client
asking for `tl` found no `tl` in the answer, and the model was asked for Filipino. RFC 5646 §4.5
applies only the registry's Preferred-Value fields, so they are read here from the registry file
langcodes ships, with langcodes' own parser; the library has no switch for "registry only".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from langcodes import Language
from langcodes.registry_parser import parse_registry

# ISO 639-2 has a terminology (`deu`) and a bibliographic (`ger`) code for some languages.
_ALPHA3_VARIANTS = ("T", "B")


@dataclass(frozen=True)
class _Registry:
    """What canonicalisation needs from the registry, keyed in lower case."""

    whole_tags: dict[str, str]  # grandfathered and redundant tags → their Preferred-Value
    subtags: dict[tuple[str, str], str]  # (registry type, subtag) → its Preferred-Value
    two_letter: dict[str, str]  # ISO 639-2 code → the ISO 639-1 code the registry holds instead
    collections: frozenset[str]  # language subtags of `Scope: collection` (`sla`, `sgn`, `art`)
    sign_languages: frozenset[str]  # the languages registered as extlangs of `sgn` (`ase`, `bfi`)


@cache
def _registry() -> _Registry:
    whole_tags: dict[str, str] = {}
    subtags: dict[tuple[str, str], str] = {}
    two_letter_codes: list[str] = []
    collections: set[str] = set()
    sign_languages: set[str] = set()
    entries: list[dict[str, str]] = list(parse_registry())  # type: ignore[no-untyped-call]
    for entry in entries:
        preferred = entry.get("Preferred-Value")
        if "Tag" in entry:
            if preferred:
                whole_tags[entry["Tag"].lower()] = preferred
            continue
        kind, subtag = entry["Type"], entry["Subtag"].lower()
        if kind == "language" and entry.get("Scope") == "collection":
            collections.add(subtag)
        if kind == "extlang" and "sgn" in entry.get("Prefix", ()):
            sign_languages.add(subtag)
        if preferred:
            subtags[kind, subtag] = preferred
        elif kind == "language" and len(subtag) == 2:
            two_letter_codes.append(subtag)
    two_letter = {Language.get(code, normalize=False).to_alpha3(variant): code
                  for code in two_letter_codes for variant in _ALPHA3_VARIANTS}
    return _Registry(whole_tags, subtags, two_letter, frozenset(collections), frozenset(sign_languages))


def is_collection(language: str) -> bool:
    """Whether a language subtag names a group of languages (RFC 5646 §3.1.11, `Scope: collection`)."""
    return language.lower() in _registry().collections


def is_sign_language(language: str) -> bool:
    """Whether a language subtag names a sign language (the registry files each under `sgn`)."""
    return language.lower() in _registry().sign_languages


def registry_form(tag: str) -> Language:
    """The tag with the registry's Preferred-Values put in, RFC 5646 §4.5 steps 2 and 3 (`iw` →
    `he`, `zh-yue` → `yue`, `i-klingon` → `tlh`, `my-BU` → `my-MM`; `tl` stays `tl`).

    Raises langcodes' LanguageTagError when the tag does not parse.
    """
    registry = _registry()
    tag = registry.whole_tags.get(tag.lower(), tag)
    parsed = Language.get(tag, normalize=False)
    language, extlangs = parsed.language, parsed.extlangs
    if extlangs and len(extlangs) == 1 and ("extlang", extlangs[0]) in registry.subtags:
        # An extlang's Preferred-Value replaces the prefix language as well (`zh-yue` → `yue`).
        language, extlangs = registry.subtags["extlang", extlangs[0]], None
    elif language:
        language = registry.subtags.get(("language", language), language)
    script, territory = parsed.script, parsed.territory
    return Language.make(
        language=language, extlangs=extlangs,
        script=registry.subtags.get(("script", script.lower()), script) if script else None,
        territory=registry.subtags.get(("region", territory.lower()), territory) if territory else None,
        variants=[registry.subtags.get(("variant", variant), variant) for variant in parsed.variants or ()],
        extensions=parsed.extensions, private=parsed.private)


def tag_text(language: Language) -> str:
    """The tag written out in canonical form: subtags in the order sent, extensions ordered by their
    singleton (RFC 5646 §4.5 step 1). langcodes' `to_tag` sorts variants, which reorders a tag
    (`sl-rozaj-biske` → `sl-biske-rozaj`), and leaves extensions as they came."""
    subtags = [language.language or "und", *(language.extlangs or ()), language.script, language.territory,
               *(language.variants or ()), *sorted(language.extensions or ()), language.private]
    return "-".join(subtag for subtag in subtags if subtag)


def two_letter_form(tag: str) -> str | None:
    """The tag with an ISO 639-2 language code swapped for the ISO 639-1 code BCP 47 registers
    instead (`eng` → `en`, `ger-AT` → `de-AT`; RFC 5646 §2.2.1), or None for any other tag."""
    head, dash, rest = tag.partition("-")
    code = _registry().two_letter.get(head.lower())
    return f"{code}{dash}{rest}" if code else None
