"""The stand-in's "translation" writes each language in its own script, as a real model does.

The stand-in cannot translate; it keeps the English's shape (tags, digits, punctuation) and
replaces every Latin letter a-z by a letter of the language's script (words in capitals or with
digits, `BMW`, `X5`, `WDB1234`, stay Latin, as a model keeps them), so a Russian text is
Cyrillic and a Japanese one kana, and LotLens' language check sees what it would see from the
real API. The scripts are CLDR's likely scripts for the languages (likelySubtags), written down
here on their own rather than taken from LotLens' code, so that a mistake there shows; a tag that
names its script (`sr-Latn`, `zh-Hant`) is written in it. Other languages keep Latin letters.
"""

from __future__ import annotations

import re

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
# Tags, entities and words: only words outside tags and entities change.
_PIECE = re.compile(r"<[^>]*>|&#?\w+;|[A-Za-z0-9]+")
_LATIN = re.compile(r"[A-Za-z]")


def script_of(tag: str) -> str | None:
    """The script the stand-in writes a language in; None for Latin (left as it is)."""
    subtags = tag.split("-")
    named = next((part for part in subtags[1:] if len(part) == 4 and part.isalpha()), None)
    if named is not None:
        named = _SCRIPT_SUBTAGS.get(named.title(), named.title())
        return named if named in _ALPHABETS else None
    return _LANGUAGE_SCRIPTS.get(subtags[0].lower())


def in_script(tag: str, text: str) -> str:
    """`text` with each Latin letter outside tags and entities written in the tag's script."""
    script = script_of(tag)
    if script is None:
        return text
    alphabet = _ALPHABETS[script]

    def letter(match: re.Match[str]) -> str:
        return alphabet[(ord(match.group().lower()) - ord("a")) % len(alphabet)]

    def word(match: re.Match[str]) -> str:
        piece = match.group()
        # Tags, entities and what a model keeps in Latin letters: `VIN`, `BMW`, `X5`, `WDB1234`.
        if piece.startswith(("<", "&")) or piece.isupper() or any(c.isdigit() for c in piece):
            return piece
        return _LATIN.sub(letter, piece)

    return _PIECE.sub(word, text)
