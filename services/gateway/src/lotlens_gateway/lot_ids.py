"""Lot ids: kept exactly as sent, but two that are one text are one lot, and every character shows.

`Citroën` reaches us as U+00EB from one system and as `e` + U+0308 from another (macOS file
names, some keyboards); both look the same everywhere, so a request holding both holds one lot
twice and gets the 409 of an exact duplicate. The ids are compared in NFC but not rewritten to
it: integrators look their lots up by the id they sent.

Control (Cc) and format (Cf) characters are refused: a zero-width space or a byte-order mark
makes an id that looks like another id, or like nothing, and U+202E RIGHT-TO-LEFT OVERRIDE
reverses the text after it wherever the id is shown (the console, logs, a support ticket). So is
every line break Unicode names (UAX #14's mandatory breaks): CR, LF, U+000B, U+000C and U+0085 NEL
are controls, U+2028 LINE SEPARATOR (Zl) and U+2029 PARAGRAPH SEPARATOR (Zp) the only others. A
line break splits the log line, the CSV row or the console cell that shows the id; the two
separators were accepted. And so is every other character Unicode says to render as nothing
(Default_Ignorable_Code_Point) though it is a mark or a letter: U+034F COMBINING GRAPHEME JOINER,
the variation selectors, the Hangul fillers. `A1` and `A1` + U+034F were two lots in one job.
"""

from __future__ import annotations

import re
import unicodedata

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt) but Cf, which the categories
# refuse: Other_Default_Ignorable_Code_Point and the variation selectors, the E0000 block whole.
_SHOWS_NOTHING = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2065\u3164"
                            "\ufe00-\ufe0f\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]")
# An id full of them is named by its first few; the rest add nothing to the fix.
_MAX_NAMED = 5


def comparison_form(lot_id: str) -> str:
    """The form in which two lot ids are the same lot: NFC (ASCII ids, nearly all, as they are)."""
    return lot_id if lot_id.isascii() else unicodedata.normalize("NFC", lot_id)


def hidden_characters(lot_id: str) -> list[str]:
    """The distinct characters of a lot id that show nothing or break the line, in order of appearance."""
    # C speed first: no Cc, Cf, Zl or Zp character is printable, and an ASCII one shows unless it is Cc.
    if lot_id.isprintable() and (lot_id.isascii() or not _SHOWS_NOTHING.search(lot_id)):
        return []
    return list(dict.fromkeys(char for char in lot_id if unicodedata.category(char) in _HIDDEN_CATEGORIES
                              or _SHOWS_NOTHING.match(char)))


def hidden_characters_problem(characters: list[str]) -> str:
    """Why a lot id with these characters is refused, naming them by code point and name."""
    named = ", ".join(f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
                      for char in characters[:_MAX_NAMED])
    more = f" and {len(characters) - _MAX_NAMED} more" if len(characters) > _MAX_NAMED else ""
    return (f"contains {named}{more}: control, format, line-break and other characters that show "
            "nothing are invisible, break the line or reorder the text around them")
