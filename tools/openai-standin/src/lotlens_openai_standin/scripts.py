"""The stand-in's "translation" writes each language in its own script, as a real model does.

The stand-in cannot translate; it keeps the English's shape (tags, digits, punctuation) and
replaces every Latin letter outside tags and entities by a letter of the language's script, so
a Russian text is Cyrillic and a Japanese one kana, and LotLens' language check sees what it
would see from the real API. Names go into the script too (`BMW` → `БМЦ`), where a real model
keeps them in Latin: LotLens' check, which leaves such names out of its count, is tested on
texts of its own (tests/unit/test_language_check.py); keeping them here cost a regular
expression per word, more than the rest of the stand-in's work on a request.

The scripts are CLDR's likely scripts for the languages (likelySubtags), written down
here on their own rather than taken from LotLens' code, so that a mistake there shows; a tag that
names its script (`sr-Latn`, `zh-Hant`) is written in it. Other languages keep Latin letters.
"""

from __future__ import annotations

import re
from functools import cache

# Letters of each script, in the order that stands for a, b, c, ... (repeated when shorter).
_ALPHABETS = {
    "Cyrl": "абвгдежзийклмнопрстуфхцчшщ",
    "Grek": "αβγδεζηθικλμνξοπρστυφχψωάέ",
    "Arab": "ابتثجحخدذرزسشصضطظعغفقكلمن",
    "Hebr": "אבגדהוזחטיכלמנסעפצקרשת",
    "Deva": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथद",
    "Beng": "অআইঈউঊএঐওঔকখগঘচছজঝটঠডঢণতথদ",
    "Taml": "அஆஇஈஉஊஎஏஐஒஓகஙசஞடணதநபமயரலவழ",
    "Thai": "กขคงจฉชซญดตถทธนบปผฝพฟมยรลว",
    "Geor": "აბგდევზთიკლმნოპჟრსტუფქღყშჩ",
    "Armn": "աբգդեզէըթժիլխծկհձղճմյնշոչպ",
    "Hang": "가나다라마바사아자차카타파하거너더러머버서어저처커터",
    "Jpan": "あいうえおかきくけこさしすせそたちつてとなにぬねのは",
    "Hani": "车门前后左右损坏划痕凹陷保险杠灯玻璃轮胎引擎盖顶侧面漆裂缝",
}
# CLDR likelySubtags' script of each language whose likely script is one of the above.
_LANGUAGE_SCRIPTS = {
    **dict.fromkeys(("ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "tg", "mn"), "Cyrl"),
    "el": "Grek", **dict.fromkeys(("ar", "fa", "ur", "ps", "prs", "ckb", "ug", "sd"), "Arab"),
    **dict.fromkeys(("he", "yi"), "Hebr"), **dict.fromkeys(("hi", "mr", "ne"), "Deva"),
    "bn": "Beng", "ta": "Taml", "th": "Thai", "ka": "Geor", "hy": "Armn", "ko": "Hang",
    "ja": "Jpan", **dict.fromkeys(("zh", "yue"), "Hani"),
}
_SCRIPT_SUBTAGS = {"Hans": "Hani", "Hant": "Hani", "Kore": "Hang"}
# What stays as it is: tags and entities.
_MARKUP = re.compile(r"(<[^>]*>|&#?\w+;)")


def script_of(tag: str) -> str | None:
    """The script the stand-in writes a language in; None for Latin (left as it is)."""
    subtags = tag.split("-")
    named = next((part for part in subtags[1:] if len(part) == 4 and part.isalpha()), None)
    if named is not None:
        named = _SCRIPT_SUBTAGS.get(named.title(), named.title())
        return named if named in _ALPHABETS else None
    return _LANGUAGE_SCRIPTS.get(subtags[0].lower())


def in_script(tag: str, text: str) -> str:
    script = script_of(tag)
    if script is None:
        return text
    table = _latin_to(script)
    pieces = _MARKUP.split(text)
    # The split alternates text to write in the script and markup.
    pieces[::2] = [piece.translate(table) for piece in pieces[::2]]
    return "".join(pieces)


@cache
def _latin_to(script: str) -> dict[int, str]:
    """a-z and A-Z → the script's letters (capitals where it has them), as a `str.translate` table:
    a callback per letter, or per word, took 150 or 35 µs for one answer, about as much as the
    rest of the stand-in's work on a request."""
    alphabet = _ALPHABETS[script]
    table: dict[int, str] = {}
    for offset in range(26):
        letter = alphabet[offset % len(alphabet)]
        table[ord("a") + offset] = letter
        table[ord("A") + offset] = letter.upper()
    return table
