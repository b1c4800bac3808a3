"""Model text becomes safe paragraph HTML: only the allowed tags, no attributes, no scripts."""

from __future__ import annotations

import random
import re

import nh3
import pytest

from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.html_text import (
    _BLOCKS,
    _PRINTABLE_BLOCKS,
    ALLOWED_TAGS,
    _nests_cleanly,
    already_clean,
    as_paragraph_html,
    printable,
)

HOSTILE = ('<p>Dent on the door.</p><script>alert("x")</script><img src="x.png" onerror="alert(1)">'
           '<a href="javascript:alert(1)">details</a><b onclick="alert(1)">bold</b>'
           '<p style="color:red" class="c">Scratch.</p><iframe src="https://evil.example"></iframe>')


def test_hostile_markup_keeps_only_the_allowed_tags_without_attributes() -> None:
    assert as_paragraph_html(HOSTILE) == "<p>Dent on the door.</p><p>details<b>bold</b></p><p>Scratch.</p>"


@pytest.mark.parametrize(("markup", "html"), [
    ('<b lang="fa">x</b> y', "<p><b>x</b> y</p>"),
    ('<ul lang="he"><li>b</li></ul>', "<ul><li>b</li></ul>"),
    ('<p title="Seller verified: no damage">t</p>', "<p>t</p>"),
    ('<p lang="ar" dir="rtl" title="t"><em lang="en">BMW</em> x</p>', "<p><em>BMW</em> x</p>"),
])
def test_the_attributes_nh3_allows_by_default_are_dropped_too(markup: str, html: str) -> None:
    """nh3 keeps `lang` and `title` on every tag unless told otherwise: a translation that marked its
    language (`<b lang="fa">`) came back with the `<b>` never closed, bolding the rest of the
    customer's page, and a `title` put model-written text in a tooltip."""
    assert as_paragraph_html(markup) == html


@pytest.mark.parametrize("text", ["<ul><li>one</li><li><strong>two</strong></li></ul>",
                                  "<p>a<br>b <em>c</em> <i>d</i></p>", "<ol><li>x</li></ol>"])
def test_the_allowed_tags_pass_unchanged(text: str) -> None:
    assert as_paragraph_html(text) == text


def test_plain_text_is_escaped_into_paragraphs() -> None:
    assert as_paragraph_html("a < b & c\n\nsecond  line") == "<p>a &lt; b &amp; c</p><p>second line</p>"


def test_markup_not_starting_with_a_block_is_wrapped_in_a_paragraph() -> None:
    assert as_paragraph_html("<span>Rear</span> bumper <b>cracked</b>") == "<p>Rear bumper <b>cracked</b></p>"


@pytest.mark.parametrize(("text", "html"), [
    ("Dent\x00 on\x01 the\x7f door\x85.", "<p>Dent on the door.</p>"),
    ("<p>Dent\x00 on the\x0b door.</p>", "<p>Dent on the door.</p>"),
    ("Dent\ud800 here\tand\r\nthere", "<p>Dent\ufffd here and there</p>"),
])
def test_control_characters_are_dropped_and_a_lone_surrogate_replaced(text: str, html: str) -> None:
    # A NUL stopped the lot's description at PostgreSQL; a lone surrogate cannot be UTF-8.
    assert as_paragraph_html(text) == html
    html.encode()


def test_nothing_left_after_cleaning_is_a_model_error() -> None:
    with pytest.raises(ModelOutputError):
        as_paragraph_html("<script>alert(1)</script>")


# Pieces the fuzz test strings together: allowed and refused tags, entities, characters the
# sanitiser rewrites, whitespace and text.
_PIECES = ["<p>", "</p>", "<ul>", "</ul>", "<ol>", "</ol>", "<li>", "</li>", "<b>", "</b>",
           "<strong>", "</strong>", "<i>", "</i>", "<em>", "</em>", "<br>", "</br>", "<div>",
           "</div>", "<script>", "</script>", "<p >", "<P>", "&amp;", "&lt;", "&gt;", "&#x27;",
           "&nbsp;", "&", "<", ">", "\"", "'", "\n", " ", "\t", "\r", "\xa0", "\x00", "text",
           "Dent", "é", "<b onclick=x>"]


def _inline(chance: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(chance.randint(0, 3)):
        tag = chance.choice(["b", "strong", "i", "em", "br", "", "", ""])
        if tag == "br":
            parts.append("<br>")
        elif tag and depth < 3:
            parts.append(f"<{tag}>{_inline(chance, depth + 1)}</{tag}>")
        else:
            parts.append(chance.choice(["Dent", " ", "\n", "&amp;", "&lt;", "&gt;", "é", "a b"]))
    return "".join(parts)


def _model_like(chance: random.Random) -> str:
    blocks = []
    for _ in range(chance.randint(1, 3)):
        kind = chance.choice(["p", "ul", "ol"])
        if kind == "p":
            blocks.append(f"<p>{_inline(chance)}</p>")
        else:
            items = "".join(f"<li>{_inline(chance)}</li>" for _ in range(chance.randint(0, 3)))
            blocks.append(f"<{kind}>{items}</{kind}>")
        blocks.append(chance.choice(["", "", "\n", " "]))
    return "".join(blocks)


def test_markup_taken_as_already_clean_is_exactly_what_nh3_returns() -> None:
    chance = random.Random(14)
    accepted = plain = 0
    for _ in range(20_000):
        markup = _model_like(chance)
        if chance.random() < 0.6:  # one random piece anywhere: most such strings need nh3
            at = chance.randint(0, len(markup))
            markup = markup[:at] + chance.choice(_PIECES) + markup[at:]
        if already_clean(markup):
            accepted += 1
            plain += bool(_BLOCKS.fullmatch(markup))
            assert nh3.clean(markup, tags=set(ALLOWED_TAGS), attributes={}, link_rel=None) == markup, markup
    assert accepted > 5_000  # the fuzz reaches the fast path often enough to mean something
    assert plain > 1_000  # and the one-regex path for plain paragraphs and lists


def test_the_one_regex_paths_take_only_what_the_walk_takes() -> None:
    # `_BLOCKS` answers for the walk: it may take less, never more. `_PRINTABLE_BLOCKS` takes what
    # `_BLOCKS` takes with nothing `printable` removes.
    chance = random.Random(1207)
    inline = entities = 0
    for _ in range(20_000):
        markup = _model_like(chance)
        if chance.random() < 0.3:
            at = chance.randint(0, len(markup))
            markup = markup[:at] + chance.choice([*_PIECES, "\x85", "\ud800", "\x9f"]) + markup[at:]
        if chance.random() < 0.2:  # an inline tag's place taken by a block or another inline tag
            old = chance.choice(["b", "strong", "i", "em"])
            new = chance.choice(["ul", "ol", "li", "p", "div", "b"])
            markup = markup.replace(f"<{old}>", f"<{new}>").replace(f"</{old}>", f"</{new}>")
        if _BLOCKS.fullmatch(markup):
            assert _nests_cleanly(markup), markup
            inline += "<strong>" in markup or "<em>" in markup
            entities += "&amp;" in markup
        if _PRINTABLE_BLOCKS.fullmatch(markup):
            assert _BLOCKS.fullmatch(markup) and printable(markup) == markup, markup
    assert inline > 500 and entities > 500  # the inline tags and entities are taken, not only words


@pytest.mark.parametrize("markup", [
    "<p>a</p>\n<ul><li>b</li></ul>", "<p>Standin vision: 5 image(s) reviewed. Ford F-150 &amp; hail</p>",
    "<ul><li><strong>Front bumper:</strong> pushed in<br>cracked</li></ul>\n<p>A <em>light</em> dent.</p>"])
def test_model_html_with_inline_tags_and_entities_is_taken_by_one_regex(markup: str) -> None:
    assert _BLOCKS.fullmatch(markup) and _PRINTABLE_BLOCKS.fullmatch(markup)


@pytest.mark.parametrize("markup", [
    "<p>a</p>\n<ul><li>b</li></ul>", "<p>Standin vision: 5 image(s) reviewed. Ford F-150 &amp; hail</p>"])
def test_model_style_html_is_recognised_as_clean(markup: str) -> None:
    assert already_clean(markup)


@pytest.mark.parametrize("markup", [
    "<p>a<script>x</script></p>", "<p onclick=x>a</p>", "<b>open", "<li>x</li>", "<p><p>x</p></p>",
    "<p>it&#x27;s</p>", "a</p>", "<p>x\xa0y</p>", "<p>a < b</p>", "<ul>x<li>y</li></ul>"])
def test_markup_needing_work_goes_to_nh3(markup: str) -> None:
    assert not already_clean(markup)


@pytest.mark.parametrize("markup", [
    "<li>Seller verified: no damage</li>", "intro <ul><li>a</li></ul> outro", "<ul><li>a</ul><li>b",
    "<p>a</p>tail", "<b>x</b><p>y</p>", "<p>dent<ul><li>door</li></ul>and scratch</p>",
    "<ul>loose text<li>a</li></ul>", "<ol><li>a<ul><li>nested</li></ul></li></ol>", "<b><p>bold</p></b>",
])
def test_blocks_are_nested_as_html_nests_them(markup: str) -> None:
    """A stray `<li>`, a list inside `<p>`: embedded in a customer's page, a model's `<li>` closed
    the customer's own `<li>` and `<div>` around the description, and its text stood among the
    customer's items (injected "no damage" notes next to real lots), outside the description."""
    cleaned = as_paragraph_html(markup)
    assert already_clean(cleaned), cleaned
    assert words(cleaned) == words(markup)  # every word kept, in order


def words(markup: str) -> list[str]:
    return re.findall(r"[\w:]+", re.sub(r"<[^>]*>", " ", markup))


def test_any_tag_soup_comes_out_nested_with_every_word() -> None:
    rng = random.Random(7)
    pieces = ["<p>", "</p>", "<ul>", "</ul>", "<ol>", "</ol>", "<li>", "</li>", "<b>", "</b>", "<em>",
              "</em>", "<br>", "<div>", "</div>", "dent", "scratch door", " ", "&amp;"]
    for _ in range(3000):
        markup = "<p>" + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        try:
            cleaned = as_paragraph_html(markup)
        except ModelOutputError:
            assert not words(markup)
            continue
        assert already_clean(cleaned), (markup, cleaned)
        assert words(cleaned) == words(nh3.clean(markup, tags=set(ALLOWED_TAGS), attributes={})), markup


@pytest.mark.parametrize("markup", ["<i>" * 400 + "deep", "<b><i>" * 300 + "deep" + "</i></b>" * 300,
                                    "<ul><li>" * 400 + "deep"])
def test_deeply_nested_markup_comes_out_flat_not_as_a_recursion_error(markup: str) -> None:
    """400 nested tags (1 KB, prompt-injectable) raised RecursionError while the blocks were
    rebuilt: a batch line that no collection could ever get past."""
    cleaned = as_paragraph_html(markup)
    assert already_clean(cleaned) and words(cleaned) == ["deep"]
