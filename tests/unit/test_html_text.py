"""Model text becomes safe paragraph HTML: only the allowed tags, no attributes, no scripts."""

from __future__ import annotations

import pytest

from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.html_text import as_paragraph_html

HOSTILE = ('<p>Dent on the door.</p><script>alert("x")</script><img src="x.png" onerror="alert(1)">'
           '<a href="javascript:alert(1)">details</a><b onclick="alert(1)">bold</b>'
           '<p style="color:red" class="c">Scratch.</p><iframe src="https://evil.example"></iframe>')


def test_hostile_markup_keeps_only_the_allowed_tags_without_attributes() -> None:
    assert as_paragraph_html(HOSTILE) == "<p>Dent on the door.</p>details<b>bold</b><p>Scratch.</p>"


@pytest.mark.parametrize("text", ["<ul><li>one</li><li><strong>two</strong></li></ul>",
                                  "<p>a<br>b <em>c</em> <i>d</i></p>", "<ol><li>x</li></ol>"])
def test_the_allowed_tags_pass_unchanged(text: str) -> None:
    assert as_paragraph_html(text) == text


def test_plain_text_is_escaped_into_paragraphs() -> None:
    assert as_paragraph_html("a < b & c\n\nsecond  line") == "<p>a &lt; b &amp; c</p><p>second line</p>"


def test_markup_not_starting_with_a_block_is_wrapped_in_a_paragraph() -> None:
    assert as_paragraph_html("<span>Rear</span> bumper <b>cracked</b>") == "<p>Rear bumper <b>cracked</b></p>"


def test_nothing_left_after_cleaning_is_a_model_error() -> None:
    with pytest.raises(ModelOutputError):
        as_paragraph_html("<script>alert(1)</script>")
