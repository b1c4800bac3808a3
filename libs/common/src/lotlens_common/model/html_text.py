"""Normalising model text into safe HTML made of `<p>` blocks.

Whatever the model writes ends up on integrators' web pages, and text injected through a lot's
notes or an image can steer it: HTML is therefore cleaned by a real sanitiser (nh3, the Rust
`ammonia` library), never by patterns. Only `ALLOWED_TAGS` survive, without any attribute;
`<script>`/`<style>` lose their content, other tags are dropped and their text kept.
"""

from __future__ import annotations

import html
import re

import nh3

from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.html_blocks import nested_blocks

ALLOWED_TAGS = frozenset({"p", "ul", "ol", "li", "b", "strong", "i", "em", "br"})
# Any tag means the model already wrote HTML: it is sanitised; otherwise it is plain text.
_ANY_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(?P<body>.*?)\n?```$", re.DOTALL)
_BLANK_LINE = re.compile(r"\n\s*\n")
# C0 and C1 controls but tab, line feed and carriage return: JSON carries them and a model may
# write them, but PostgreSQL text cannot hold a NUL (the lot's description was never stored), and
# the others have no place in a web page (nor in XML).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A lone surrogate (Python's `json` reads "\ud800"; the SDK's direct answers come through it)
# cannot be written as UTF-8.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Either of the two: nearly every text has neither, and one search says so without building a copy.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Built once: `nh3.clean` builds its cleaner on every call, which took twice as long as the
# cleaning itself (a third of the vision-batcher's CPU while collecting 50,000 descriptions).
# `"*": set()`: without it nh3 keeps its generic attributes (`lang`, `title`) on every tag.
_CLEANER = nh3.Cleaner(tags=set(ALLOWED_TAGS), attributes={"*": set()}, link_rel=None)


# Tags that may hold text, and where each allowed tag may open ("" = the top level).
_HOLDS_TEXT = frozenset({"p", "li", "b", "strong", "i", "em"})
_INLINE = frozenset({"b", "strong", "i", "em"})
_PARENTS = {"p": {""}, "ul": {""}, "ol": {""}, "li": {"ul", "ol"},
            **{tag: {"p", "li", *_INLINE} for tag in _INLINE}}
# A tag-like token, an entity the sanitiser writes back as it is, or a character it rewrites.
_TOKEN = re.compile(r"</?[a-z]*>|&(?:amp|lt|gt);|[<>&\x00-\x08\x0b-\x1f\x7f\xa0]")
# What models write most: paragraphs and lists of text, their words plain or in inline tags (one
# level), with `<br>` and the entities the sanitiser keeps. Matched in one pass of the regex
# engine; anything else (inline tags within inline tags, text outside blocks) goes through the
# walk below, which takes all of these too. The walk took about 35 us for a 1.2 kB description with one
# `&amp;` and 48 us with `<strong>` item labels, where this takes 6-8.
_SPACE = r"[ \t\n]*"


def _blocks(words: str, possessive: bool = False) -> re.Pattern[str]:
    """Blocks as above, whose text is stretches of `words` (the pattern of one stretch) and the
    tags and entities; `possessive`: each repetition gives nothing back (Python 3.11.5 or later:
    before it, a possessive repetition matched text the plain one does not, cpython gh-106052)."""
    more = "+" if possessive else ""
    run = rf"{words}(?:(?:&(?:amp|lt|gt);|<br>){words})*{more}"
    inline = "|".join(rf"<{tag}>{run}</{tag}>" for tag in ("b", "strong", "i", "em"))
    text = rf"{words}(?:(?:&(?:amp|lt|gt);|<br>|{inline}){words})*{more}"
    block = rf"<p>{text}</p>|<(ul|ol)>(?:{_SPACE}<li>{text}</li>)*{more}{_SPACE}</\1>"
    return re.compile(rf"(?:{_SPACE}(?:{block}))+{more}{_SPACE}")


_BLOCKS = _blocks(r"[^<>&\x00-\x08\x0b-\x1f\x7f\xa0]*")
# The same blocks with nothing `printable` would take out either (C1 controls, lone surrogates): a
# model's text that matches is its own answer, stripped, told in one pass (6.7 us for 1.2 kB of
# Cyrillic) where `printable` first took 2.1 us more.
_PRINTABLE_BLOCKS = _blocks(r"[^<>&\x00-\x08\x0b-\x1f\x7f-\xa0\ud800-\udfff]*")
# The same blocks, their words any characters but `<` and with no `>` before the next `<` (the
# lookahead): the regex engine tests a class like the one above a character at a time (~5 ns
# each, 6-7 us for 1.2 kB), and scans for one character in a tight loop (1.6-2 us for the whole
# pattern; possessive, as every word and tag is told by its first character, it keeps no places
# to go back to: 2.3-2.9 us without). For a text without `&` whose characters are all printable
# (tab and line feed aside), which `_written_clean` makes sure of in C, it matches exactly what
# `_PRINTABLE_BLOCKS` matches.
_TAGGED_BLOCKS = _blocks(r"(?=[^>]*<)[^<]*+", possessive=True)
# The ASCII characters `_PRINTABLE_BLOCKS` refuses in text (`<>&` aside).
_ASCII_CONTROLS = bytes([*range(0x09), *range(0x0b, 0x20), 0x7f])


def _written_clean(text: str) -> bool:
    """Whether `_PRINTABLE_BLOCKS` matches `text`, told in 3-4 us of a 1.2 kB text where it took
    6-7: its characters are checked in C (`isprintable`, false for every control, U+00A0 and
    surrogate; an ASCII text's controls deleted from its bytes) and its tags by `_TAGGED_BLOCKS`.
    A text with `&` (an entity) or a character these checks refuse (a tab in a text not all
    ASCII, a zero-width space) is told by `_PRINTABLE_BLOCKS` itself."""
    if "&" not in text:
        if text.isascii():
            ascii_text = text.encode("ascii")
            plain = len(ascii_text.translate(None, _ASCII_CONTROLS)) == len(ascii_text)
        else:  # a line feed is printable to `_PRINTABLE_BLOCKS` (between blocks, say), not to `isprintable`
            plain = (text.replace("\n", "") if "\n" in text else text).isprintable()
        if plain:
            return bool(_TAGGED_BLOCKS.fullmatch(text))
    return bool(_PRINTABLE_BLOCKS.fullmatch(text))


def already_clean(markup: str) -> bool:
    """Whether `markup` is already what the sanitiser would return: allowed, attribute-free tags
    nested as HTML nests them, text with nothing to escape.

    Recognising, never rewriting: anything else goes through nh3. The cut is for speed: nh3
    releases the GIL on each call, and with another thread busy each call waited ~70 us to get
    it back, a quarter of a stage's collection time. A seeded fuzz test holds this to nh3.
    """
    return bool(_BLOCKS.fullmatch(markup)) or _nests_cleanly(markup)


def _nests_cleanly(markup: str) -> bool:
    """`already_clean` by a walk over the tags: what `_BLOCKS` takes, and the rest."""
    stack: list[str] = []
    position = 0
    for match in _TOKEN.finditer(markup):
        if not _text_fits(markup[position:match.start()], stack):
            return False
        position, token = match.end(), match.group()
        if token.startswith("&") and len(token) > 1:
            if not _text_fits("x", stack):
                return False
        elif len(token) < 3 or token[0] != "<":
            return False
        elif token[1] == "/":
            if not stack or stack.pop() != token[2:-1]:
                return False
        elif token == "<br>":
            if not _text_fits("x", stack):
                return False
        elif (stack[-1] if stack else "") in _PARENTS.get(token[1:-1], ()):
            stack.append(token[1:-1])
        else:
            return False
    return not stack and _text_fits(markup[position:], stack)


def _text_fits(text: str, stack: list[str]) -> bool:
    return not text or text.isspace() or bool(stack and stack[-1] in _HOLDS_TEXT)


def sanitised(markup: str) -> str:
    """`markup` with only the allowed tags, attribute-free, everything else escaped or dropped, in
    blocks nested as HTML nests them (`html_blocks`)."""
    if already_clean(markup):
        return markup.strip()
    cleaned = _CLEANER.clean(markup).strip()
    return cleaned if already_clean(cleaned) else nested_blocks(cleaned)


def printable(text: str) -> str:
    """`text` without control characters (tab and line breaks aside), a lone surrogate as U+FFFD:
    what PostgreSQL, JSON and a web page can all hold."""
    # `isprintable` is false for every control and surrogate: a one-line text is done in C, one
    # with line breaks by one search; the two substitutions cost ~1 us a translation.
    if text.isprintable() or not _UNPRINTABLE.search(text):
        return text
    return _LONE_SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def as_paragraph_html(text: str) -> str:
    """Sanitised HTML; plain text → one escaped `<p>` per blank-line-separated paragraph.

    Control characters (tab and line breaks aside) are dropped and a lone surrogate becomes U+FFFD.
    """
    if _written_clean(text):
        return text.strip()  # what models write most: `printable` keeps it, `_BLOCKS` below too
    stripped = printable(text).strip()
    fenced = _FENCE.match(stripped) if stripped.startswith("```") else None
    if fenced:
        # Models sometimes wrap the answer in ```html fences despite the instructions.
        stripped = fenced.group("body").strip()
    if _BLOCKS.fullmatch(stripped):
        return stripped  # what models write most, and what `sanitised` returns of it as it is
    if _ANY_TAG.search(stripped):
        stripped = sanitised(stripped)
    elif stripped:
        paragraphs = (" ".join(block.split()) for block in _BLANK_LINE.split(stripped))
        stripped = "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs if p)
    if not stripped:
        raise ModelOutputError("the model returned no text")
    return stripped
