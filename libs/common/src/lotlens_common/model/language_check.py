"""Whether each translation is in the language it claims to be.

A translation model asked for many languages at once, as structured output, sometimes leaves a
field untranslated (the English copied) or writes it in the wrong script (`ru` in Latin letters,
`ja` in English); the lot used to complete with English stored as its Russian. Two checks, on
the text without its tags:

* untranslated: the text is the English one (whitespace aside) and that has more than a few
  words; targets in English (`en-GB`) may be.
* wrong script: for a language whose script is not Latin (`scripts.expected_script`), most
  letters must be in that script. Digits and punctuation are not letters; the script's vowel
  signs and viramas are (Devanagari's `ा` is as much of a word as `a`), and a Han character,
  a Hangul syllable or a kana counts as the Latin letters it carries (`scripts.heavy_letters`:
  3, 3, 2), so a Chinese text quoting a short English note is still Chinese. Names written in
  Latin inside such a text (`BMW`, `VIN WDB1234`, `Toyota Camry`: a word with a digit, in
  capitals, or capitalised among letters of the script) are left out of the count, and a text
  with too few letters left is not judged.
* Simplified or Traditional: a Chinese text in Han must also be in the forms its tag asks for
  (`zh-TW` Traditional, `zh-CN` Simplified: `han_variants`), judged by the characters whose two
  forms differ.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from functools import lru_cache

from lotlens_common.model.han_variants import SYSTEM_NAMES, expected_variant, variant_problem
from lotlens_common.model.languages import ENGLISH
from lotlens_common.model.scripts import (
    SCRIPT_NAMES,
    count_in_script,
    expected_script,
    heavy_letters,
    mostly_in_script,
    script_letters,
)

# Fewer letters than this (after names) say too little to judge a script by.
MIN_LETTERS = 20
# The English has to be longer than this many words for an identical text to be a copy.
MAX_SAME_WORDS = 3
_TAG = re.compile(r"<[^>]*>")
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_WORD = re.compile(r"[^\W_]+")
_PLAIN_WORD = re.compile(r"[^\W\d_]{2,}")


def plain_text(markup: str) -> str:
    """The words of sanitised HTML: tags out, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub(" ", markup)).split())


def _is_name(word: str, among_script: bool) -> bool:
    """A word that stays in Latin in any language: with a digit (`WDB1234`, `X5`), in capitals
    (`BMW`), or capitalised inside a text of another script (`Toyota`)."""
    return (any(char.isdigit() for char in word) or (len(word) > 1 and word.isupper())
            or (among_script and word[:1].isupper()))


def script_problem(text: str, script: str) -> str | None:
    """Why `text` (plain) is not in `script`, or None when most of its letters are."""
    pattern = script_letters(script)
    if pattern is None:
        return None
    if mostly_in_script(text, script):
        return None  # most characters in the script, told without counting them (below)
    # Every character in the script's ranges: letters and the marks `\W` would drop.
    in_script = count_in_script(text, script)
    if in_script * 2 > len(text):
        # Most characters, so most letters: the common case, without the (slow) letter count.
        return None
    for heavy, weight in heavy_letters(script):
        in_script += (weight - 1) * (len(text) - len(heavy.sub("", text)))
    if in_script > len(pattern.sub("", _NOT_LETTERS.sub("", text))):
        return None  # more than all the other letters, names or not
    among_script = in_script > 0
    others = 0
    for word in _WORD.findall(text):
        foreign = len(pattern.sub("", _NOT_LETTERS.sub("", word)))
        if foreign and not _is_name(word, among_script):
            others += foreign
    counted = in_script + others
    if counted < MIN_LETTERS or in_script * 2 > counted:
        return None
    return f"{in_script} of {counted} letters in {SCRIPT_NAMES[script]} script"


# Where `_first_words` cuts a text: at the first space past this many characters.
_START = 64


def _first_words(markup: str) -> list[str] | None:
    """The first words of `plain_text(markup)`, all of them complete, read from its first
    characters alone; None when they cannot be cut there (short, or the cut inside a tag).

    Cut at a space outside any tag, the start's plain text is the whole's first words: a tag
    (`<` to the next `>`) is whole on one side of the space, an entity has no space in it."""
    cut = markup.find(" ", _START)
    if cut < 0:
        return None
    opened = markup.rfind("<", 0, cut)
    if opened >= 0 and markup.find(">", opened, cut) < 0:
        return None
    return html.unescape(_TAG.sub(" ", markup[:cut])).split()


def _starts_differ(markup: str, english_start: list[str] | None) -> bool:
    """Whether the plain texts of the two already differ in their first words (the English's,
    `_first_words`): a translation into a Latin language is then no copy of the English, told
    without 16 us of making both plain texts of a 1.2 kB description (2 us)."""
    start = _first_words(markup)
    if not start or not english_start:
        return False
    shared = min(len(start), len(english_start))
    return start[:shared] != english_start[:shared]


def _english_words(text: str) -> int:
    return sum(1 for word in _PLAIN_WORD.findall(text) if not word.isupper())


def wrong_languages(english_html: str, translations: Mapping[str, str]) -> dict[str, str]:
    """language → what is wrong with its text, for each translation not in its language."""
    # The English's words only for a text not mostly in its script (a Latin language's, a wrong
    # one): 8.6 us of a 1.2 kB description, spent on every lot when all its languages pass.
    english: str | None = None
    # The English's first words once for all the Latin languages, not once each (1 us apiece;
    # read again only when it has none, a short text).
    opening: list[str] | None = None
    problems: dict[str, str] = {}
    for language, markup in translations.items():
        judged = _judging(language)
        if judged is None:
            continue
        script, variant = judged
        if script and script_problem(markup, script) is None:
            # Mostly in its script, tags and all: neither a copy of the English nor wrong, but
            # maybe in the other Chinese system (their forms are counted on the markup too: tags
            # are ASCII).
            problem = variant_problem(markup, variant) if variant else None
        elif not script and _starts_differ(markup, opening := opening or _first_words(english_html)):
            problem = None  # a Latin language's text, not the English's: nothing else to check
        else:
            text = plain_text(markup)
            if english is None:
                english = plain_text(english_html)
            if text == english and _english_words(english) > MAX_SAME_WORDS:
                problem = "the English text, untranslated"
            else:
                problem = script_problem(text, script) if script else None
                if variant and problem is None:  # a list's Latin tags outweighed its Han labels
                    problem = variant_problem(text, variant)
        if problem:
            problems[language] = problem
    return problems


# What is judged of a language is the same for every text in it: worked out once per tag (three
# cached look-ups and a split a translation), not per translation.
@lru_cache(maxsize=1024)
def _judging(language: str) -> tuple[str | None, str | None] | None:
    """(the script, the Chinese system) a text in `language` must be written in; None for English."""
    if language.split("-")[0] == ENGLISH:
        return None
    script = expected_script(language)
    return script, expected_variant(language) if script in SYSTEM_NAMES else None
