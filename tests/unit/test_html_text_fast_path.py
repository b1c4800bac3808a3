"""`as_paragraph_html`'s fast check of a model's clean text answers exactly as the regex it stands for."""

from __future__ import annotations

import random

import pytest

from lotlens_common.model.html_text import _PRINTABLE_BLOCKS, _written_clean, as_paragraph_html

# Words in the scripts LotLens translates into (ASCII, Latin-1, Cyrillic, Greek, Arabic,
# Devanagari, Han, kana, Hangul, Thai) and one past the BMP, so the texts come in every width
# of Python string.
_WORDS = ["Dent", "door", "Stoßfänger", "é", "Вмятина", "двери", "Βαθούλωμα", "انبعاج", "डेंट",
          "凹痕", "へこみ", "찌그러짐", "รอยบุบ", "😀", "BMW X5", "2019", "F-150:", "«№ 7»", "—"]
# What the fast check must refuse, or hand to the regex: what nh3 escapes or drops, controls
# `printable` removes, characters `isprintable` refuses that the regex takes, whitespace.
_ODD = [">", "<", "&", "&amp;", "&lt;", "&gt;", "&nbsp;", "&#x27;", "\x00", "\x08", "\x0b", "\x1f",
        "\x7f", "\x85", "\x9f", "\xa0", "\ud800", "\udfff", "\r", "\t", "\n", "\u200b", "\u2028",
        "\xad", "<br>", "</br>", "<p >", "<P>", "<div>", "<b>", "</b>", "<li>", "a>b", "<>"]


def _words(chance: random.Random) -> str:
    return " ".join(chance.choice(_WORDS) for _ in range(chance.randint(0, 6)))


def _inline(chance: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(chance.randint(0, 3)):
        tag = chance.choice(["b", "strong", "i", "em", "br", "", "", ""])
        if tag == "br":
            parts.append("<br>")
        elif tag and depth < chance.choice([1, 1, 1, 2]):  # an inline tag in one: not the regex's
            parts.append(f"<{tag}>{_inline(chance, depth + 1)}</{tag}>")
        else:
            parts.append(_words(chance))
    return "".join(parts)


def _model_like(chance: random.Random) -> str:
    blocks = [chance.choice(["", "", "\n", " "])]
    for _ in range(chance.randint(1, 4)):
        kind = chance.choice(["p", "p", "ul", "ol"])
        if kind == "p":
            blocks.append(f"<p>{_inline(chance)}</p>")
        else:
            items = chance.choice(["", "\n"]).join(
                f"<li>{_inline(chance)}</li>" for _ in range(chance.randint(0, 4)))
            blocks.append(f"<{kind}>{items}</{kind}>")
        blocks.append(chance.choice(["", "", "\n", " ", "\t"]))
    return "".join(blocks)


def test_the_fast_check_answers_as_the_regex_over_seeded_texts() -> None:
    chance = random.Random(2026)
    taken = fast = refused = 0
    for _ in range(30_000):
        markup = _model_like(chance)
        for _ in range(chance.choice([0, 0, 1, 1, 2])):
            at = chance.randint(0, len(markup))
            markup = markup[:at] + chance.choice(_ODD) + markup[at:]
        clean = bool(_PRINTABLE_BLOCKS.fullmatch(markup))
        assert _written_clean(markup) == clean, repr(markup)
        taken += clean
        fast += clean and "&" not in markup and (markup.isascii() or markup.replace("\n", "").isprintable())
        refused += not clean
    # Both answers are met often, and most texts taken are taken by `_TAGGED_BLOCKS`.
    assert fast > 5_000 and taken > fast + 1_000 and refused > 5_000, (fast, taken, refused)


@pytest.mark.parametrize("markup", [
    "<p>a > b</p>", "<p>a</p>>", "<ul><li>x</li>></ul>", "<p>x\x00y</p>", "<p>Вмятина\x85</p>",
    "<p>凹痕\ud800</p>", "<p>a\xa0b</p>", "<p>a & b</p>", "<p>a&nbsp;b</p>", "<p>x\ry</p>",
    "<p>a</p>x", "<p><b><i>a</i></b></p>", "<li>a</li>"])
def test_what_the_regex_refuses_the_fast_check_refuses(markup: str) -> None:
    assert not _PRINTABLE_BLOCKS.fullmatch(markup)
    assert not _written_clean(markup)


@pytest.mark.parametrize("markup", [
    "<p>Вмятина на двери</p>\n<ul><li><strong>Бампер:</strong> вдавлен</li></ul>",
    "<p>凹痕 😀 BMW</p>", "<p>Dent &amp; scratch</p>", "<p>a\tb\nc</p>", "<p>Zero\u200bwidth</p>",
    " <ol><li>1</li></ol> "])
def test_model_text_comes_back_stripped_as_it_was(markup: str) -> None:
    assert _written_clean(markup)
    assert as_paragraph_html(markup) == markup.strip()
