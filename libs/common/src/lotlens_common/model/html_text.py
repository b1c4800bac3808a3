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

ALLOWED_TAGS = frozenset({"p", "ul", "ol", "li", "b", "strong", "i", "em", "br"})
# Any tag means the model already wrote HTML: it is sanitised; otherwise it is plain text.
_ANY_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(?P<body>.*?)\n?```$", re.DOTALL)
_BLANK_LINE = re.compile(r"\n\s*\n")
_BLOCK_START = re.compile(r"<(p|ul|ol)>")


def sanitised(markup: str) -> str:
    """`markup` with only the allowed tags, attribute-free; everything else escaped or dropped."""
    return nh3.clean(markup, tags=set(ALLOWED_TAGS), attributes={}, link_rel=None).strip()


def as_paragraph_html(text: str) -> str:
    """Sanitised HTML; plain text → one escaped `<p>` per blank-line-separated paragraph."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        # Models sometimes wrap the answer in ```html fences despite the instructions.
        stripped = fenced.group("body").strip()
    if _ANY_TAG.search(stripped):
        stripped = sanitised(stripped)
        if stripped and not _BLOCK_START.match(stripped):
            stripped = f"<p>{stripped}</p>"
    elif stripped:
        paragraphs = (" ".join(block.split()) for block in _BLANK_LINE.split(stripped))
        stripped = "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs if p)
    if not stripped:
        raise ModelOutputError("the model returned no text")
    return stripped
