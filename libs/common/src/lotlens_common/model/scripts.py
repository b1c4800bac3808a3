"""Which script a language's text is written in, and which letters belong to each script.

Both halves come from Unicode data, in one place:

* A tag's script is the one it names (`zh-Hant`, `sr-Latn`), else CLDR's likely script for it
  (likelySubtags, through langcodes' `maximize`: `ru` → Cyrl, `ja` → Jpan, `pt-BR` → Latn).
  Languages written in more than one script in common use get none unless the tag names one: a
  model asked for "Serbian" may rightly answer in Latin letters. So do tags whose region implies
  another script than the language's own (`az-IR`, `ky-CN`: Arabic for Latin, Cyrillic).
* A script's letters are its ranges in Unicode's Scripts.txt (Unicode 15.1), the letters of each
  range only; Jpan, Kore and Hans/Hant are ISO 15924's combinations of them (Han + Hiragana +
  Katakana, Hangul + Han, Han). A unit test holds every range against the character names of
  Python's Unicode database.

Latin is never checked: brand names, VINs and model codes are written in it in every language.
"""

from __future__ import annotations

import re
from functools import lru_cache

import langcodes

# Unicode Scripts.txt ranges (first, last code point) of the scripts LotLens checks.
_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "Cyrl": ((0x0400, 0x052F), (0x1C80, 0x1C88), (0x1D2B, 0x1D2B), (0x1D78, 0x1D78), (0x2DE0, 0x2DFF),
             (0xA640, 0xA69F), (0x1E030, 0x1E08F)),
    "Grek": ((0x0370, 0x0373), (0x0376, 0x0377), (0x037A, 0x037D), (0x037F, 0x037F), (0x0386, 0x0386),
             (0x0388, 0x03E1), (0x03F0, 0x03FF), (0x1D26, 0x1D2A), (0x1D66, 0x1D6A), (0x1F00, 0x1FFE),
             (0xAB65, 0xAB65)),
    "Armn": ((0x0531, 0x058A), (0xFB13, 0xFB17)),
    "Hebr": ((0x0591, 0x05F4), (0xFB1D, 0xFB4F)),
    "Arab": ((0x0620, 0x064A), (0x066E, 0x06D3), (0x06D5, 0x06FF), (0x0750, 0x077F), (0x0870, 0x089F),
             (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFC), (0x1EE00, 0x1EEFF)),
    "Thaa": ((0x0780, 0x07B1),),
    "Deva": ((0x0900, 0x0950), (0x0955, 0x0963), (0x0966, 0x097F), (0xA8E0, 0xA8FF)),
    "Beng": ((0x0980, 0x09FE),),
    "Guru": ((0x0A01, 0x0A76),),
    "Gujr": ((0x0A81, 0x0AFF),),
    "Orya": ((0x0B01, 0x0B77),),
    "Taml": ((0x0B82, 0x0BFA),),
    "Telu": ((0x0C00, 0x0C7F),),
    "Knda": ((0x0C80, 0x0CF3),),
    "Mlym": ((0x0D00, 0x0D7F),),
    "Sinh": ((0x0D81, 0x0DF4),),
    "Thai": ((0x0E01, 0x0E3A), (0x0E40, 0x0E5B)),
    "Laoo": ((0x0E81, 0x0EDF),),
    "Tibt": ((0x0F00, 0x0FD4), (0x0FD9, 0x0FDA)),
    "Mymr": ((0x1000, 0x109F), (0xA9E0, 0xA9FE), (0xAA60, 0xAA7F)),
    "Geor": ((0x10A0, 0x10FA), (0x10FC, 0x10FF), (0x1C90, 0x1CBF), (0x2D00, 0x2D2D)),
    "Ethi": ((0x1200, 0x139F), (0x2D80, 0x2DDE), (0xAB01, 0xAB2E), (0x1E7E0, 0x1E7FE)),
    "Khmr": ((0x1780, 0x17F9), (0x19E0, 0x19FF)),
    "Hang": ((0x1100, 0x11FF), (0x3131, 0x318E), (0xA960, 0xA97C), (0xAC00, 0xD7A3), (0xD7B0, 0xD7FB),
             (0xFFA0, 0xFFDC)),
    "Hira": ((0x3041, 0x3096), (0x309D, 0x309F), (0x1B001, 0x1B11F), (0x1B132, 0x1B132), (0x1B150, 0x1B152)),
    # U+30FC, the prolonged sound mark, is Common with Script_Extensions Hira and Kana: in
    # katakana words it is one of their letters.
    "Kana": ((0x30A1, 0x30FA), (0x30FC, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF6F), (0xFF71, 0xFF9D),
             (0x1AFF0, 0x1AFFE), (0x1B000, 0x1B000), (0x1B120, 0x1B122), (0x1B155, 0x1B155),
             (0x1B164, 0x1B167)),
    "Hani": ((0x3005, 0x3005), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAD9), (0x20000, 0x323AF)),
}
# ISO 15924 codes that stand for several of the scripts above.
_COMBINED = {"Jpan": ("Hani", "Hira", "Kana"), "Kore": ("Hang", "Hani"), "Hans": ("Hani",),
             "Hant": ("Hani",)}
# ISO 15924's English names, for the reasons a client reads.
SCRIPT_NAMES = {
    "Cyrl": "Cyrillic", "Grek": "Greek", "Armn": "Armenian", "Hebr": "Hebrew", "Arab": "Arabic",
    "Thaa": "Thaana", "Deva": "Devanagari", "Beng": "Bengali", "Guru": "Gurmukhi", "Gujr": "Gujarati",
    "Orya": "Oriya", "Taml": "Tamil", "Telu": "Telugu", "Knda": "Kannada", "Mlym": "Malayalam",
    "Sinh": "Sinhala", "Thai": "Thai", "Laoo": "Lao", "Tibt": "Tibetan", "Mymr": "Myanmar",
    "Geor": "Georgian", "Ethi": "Ethiopic", "Khmr": "Khmer", "Hang": "Hangul", "Hira": "Hiragana",
    "Kana": "Katakana", "Hani": "Han", "Jpan": "Japanese (Han, Hiragana, Katakana)",
    "Kore": "Korean (Hangul, Han)", "Hans": "Han (Simplified)", "Hant": "Han (Traditional)",
}
# Latin letters one character of these scripts weighs: a Han character is a word or most of one,
# a Hangul syllable block two or three letters' sounds, a kana one syllable (two letters in
# romaji). Counted as one letter each, a Chinese text quoting a six-word English note read as
# mostly English ("16 of 44 letters in Han"). Other scripts' characters, vowel signs and
# viramas included, are about one Latin letter each.
_LETTER_WEIGHTS = {"Hani": 3, "Hang": 3, "Hira": 2, "Kana": 2}
# CLDR gives these one likely script, but another is as much in use (Serbian's Latin, Kazakh's
# Latin since 2021, Mongolian's traditional script, Punjabi's, Sindhi's and Kashmiri's Arabic
# or Devanagari, Ladino's Latin, its usual script today, where CLDR says Hebrew): without a
# script in the tag, any answer's script is the language's.
_SEVERAL_SCRIPTS = frozenset({"sr", "kk", "mn", "pa", "sd", "ks", "lad"})


def script_ranges(script: str) -> tuple[tuple[int, int], ...]:
    """The Scripts.txt ranges of a script code (a combined one's are its parts'); () when unknown."""
    parts = _COMBINED.get(script, (script,))
    return tuple(span for part in parts for span in _RANGES.get(part, ()))


@lru_cache(maxsize=256)
def script_letters(script: str) -> re.Pattern[str] | None:
    """One or more characters of the script, as a pattern; None for a script not checked."""
    ranges = script_ranges(script)
    if not ranges:
        return None
    return re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges) + "]+")


@lru_cache(maxsize=256)
def _neither_ascii_nor(script: str) -> re.Pattern[str]:
    """One character that is neither ASCII nor of the script (every script's ranges lie past ASCII)."""
    ranges = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in script_ranges(script))
    return re.compile(f"[^\\x00-\\x7f{ranges}]")


def count_in_script(text: str, script: str) -> int:
    """How many characters of `text` are in the script's ranges (`script_letters`, a checked script).

    Counted as the characters that are neither ASCII (encoded away in C) nor others: in a text
    mostly in its script the others are few, and a search that seldom matches scans 1.3 kB in
    about 5 us. Removing the script's runs (`script_letters(script).sub`) made a string of what
    was left and took 23 us on such a text, most of the language check of a translation."""
    return len(text) - len(text.encode("ascii", "ignore")) - len(_neither_ascii_nor(script).findall(text))


# Scripts most of whose letters fill 256-character blocks (U+xx00-U+xxFF) lying wholly in their
# ranges: Cyrillic's U+04xx, Han's U+34xx-U+4Cxx and U+4Exx-U+9Fxx, Hangul's Jamo U+11xx and syllables
# U+ACxx-U+D6xx.
# Another's text would seldom have most of its characters in such blocks (Greek, Arabic or
# Devanagari in none, Japanese's kana in none): `mostly_in_script` would cost it 1.5 us for nothing.
_WHOLE_BLOCK_SCRIPTS = frozenset({"Cyrl", "Hani", "Hang"})


@lru_cache(maxsize=256)
def _whole_blocks(script: str) -> bytes:
    """The high bytes of the BMP's 256-character blocks wholly in the script's ranges (none among
    the surrogates, U+D800-U+DFFF); empty unless every part of the script is in `_WHOLE_BLOCK_SCRIPTS`."""
    if not all(part in _WHOLE_BLOCK_SCRIPTS for part in _COMBINED.get(script, (script,))):
        return b""
    ranges = script_ranges(script)
    return bytes(high for high in range(0xD8)
                 if any(first <= high << 8 and (high << 8) + 0xFF <= last for first, last in ranges))


def mostly_in_script(text: str, script: str) -> bool:
    """Whether more than half of `text`'s characters are surely in the script's ranges: those in
    its whole blocks (`_whole_blocks`), counted in C from the high bytes of the text as UTF-16
    (2.5 us for 1.2 kB of Cyrillic where `count_in_script` takes 7). False says nothing."""
    blocks = _whole_blocks(script)
    if not blocks or text.isascii():
        return False
    # A lone surrogate is passed through as a code unit of its own, never in a block counted.
    high = text.encode("utf-16-le", "surrogatepass")[1::2]
    return (len(high) - len(high.translate(None, blocks))) * 2 > len(text)


@lru_cache(maxsize=256)
def heavy_letters(script: str) -> tuple[tuple[re.Pattern[str], int], ...]:
    """The parts of a script whose characters weigh more than one Latin letter, each as a pattern
    of one such character with its weight (`_LETTER_WEIGHTS`); () for an alphabet or abugida."""
    return tuple((pattern, _LETTER_WEIGHTS[part]) for part in _COMBINED.get(script, (script,))
                 if part in _LETTER_WEIGHTS and (pattern := script_letters(part)) is not None)


@lru_cache(maxsize=4096)
def expected_script(tag: str) -> str | None:
    """The non-Latin script a text in this (canonical) tag must be written in, or None when the
    check does not apply (Latin, a script not in the table, a language of several scripts)."""
    language = langcodes.Language.get(tag, normalize=False)
    script = language.script
    if script is None:
        if language.language in _SEVERAL_SCRIPTS:
            return None
        script = language.maximize().script
        # CLDR lets the region choose (az-IR, uz-AF, ky-CN, ha-SD → Arabic), but a language
        # written one way at home is written both ways there: a tag that does not name its
        # script is then not judged (zh-TW's Hant and zh's Hans are one Han, so still judged).
        own = langcodes.Language.make(language=language.language).maximize().script
        if script != own and script_ranges(script or "") != script_ranges(own or ""):
            return None
    return script if script is not None and script_ranges(script) else None
