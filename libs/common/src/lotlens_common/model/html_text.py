"""Normalising model text into HTML made of `<p>` blocks."""

from __future__ import annotations

import html
import re

from lotlens_common.model.errors import ModelOutputError

# Any of these means the model already wrote HTML; it is then kept as it is.
_HTML_TAG = re.compile(r"</?(p|br|div|span|ul|ol|li|strong|b|em|i|h[1-6])\b[^>]*>", re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(?P<body>.*?)\n?```$", re.DOTALL)
_BLANK_LINE = re.compile(r"\n\s*\n")


def as_paragraph_html(text: str) -> str:
    """HTML as is; plain text → one escaped `<p>` per blank-line-separated paragraph."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        # Models sometimes wrap the answer in ```html fences despite the instructions.
        stripped = fenced.group("body").strip()
    if not stripped:
        raise ModelOutputError("the model returned no text")
    if _HTML_TAG.search(stripped):
        return stripped
    paragraphs = (" ".join(block.split()) for block in _BLANK_LINE.split(stripped))
    return "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs if p)
