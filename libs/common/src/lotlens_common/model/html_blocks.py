"""Sanitised HTML rebuilt into blocks nested as HTML nests them: `<p>` paragraphs and `<ul>`/`<ol>`
lists of `<li>` items, with text and inline tags only inside them.

The sanitiser keeps allowed tags wherever the model put them. Embedded in a customer's page, a
stray `<li>` closed the customer's own `<li>` and `<div>` around the description, and its text
stood among the customer's items (an injected "seller verified: no damage" next to real lots);
a list inside `<p>` and text outside any block broke the page's structure the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# nh3's output: allowed tags without attributes, `<br>`, and text with `&`, `<`, `>` escaped.
_TOKEN = re.compile(r"<(/?)([a-z]+)>")
_INLINE = frozenset({"b", "strong", "i", "em"})
_LISTS = frozenset({"ul", "ol"})
# Tags opened deeper than this are dropped, their text kept: the rebuild recurses per level, and
# 400 nested tags (1 KB a model can be steered to write) raised RecursionError, a batch line no
# collection could ever get past.
MAX_DEPTH = 32


@dataclass
class _Node:
    tag: str  # "" for text
    text: str = ""
    children: list[_Node] = field(default_factory=list)


def nested_blocks(markup: str) -> str:
    """`markup` (the sanitiser's output) as top-level `<p>` and list blocks; every word kept."""
    blocks = _Blocks()
    for node in _parse(markup):
        blocks.place(node)
    return blocks.finish()


class _Blocks:
    """The top level being written: blocks done, the paragraph and the stray items being gathered."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.paragraph: list[str] = []
        self.stray_items: list[str] = []

    def place(self, node: _Node) -> None:
        if node.tag == "li":  # outside any list: stray items together make one list
            self._end_paragraph()
            self.stray_items.append(_item(node))
            return
        if not node.tag and not node.text.strip() and self.stray_items:
            return  # the space between two stray items
        self._end_items()
        if node.tag in _LISTS:
            self._end_paragraph()
            self.out.append(_list(node.tag, node.children))
        elif node.tag == "p":  # its blocks lifted out, between paragraphs of its text
            self._end_paragraph()
            for child in node.children:
                self.place(child)
            self._end_items()
            self._end_paragraph()
        else:
            self.paragraph.append(_inline(node))

    def finish(self) -> str:
        self._end_items()
        self._end_paragraph()
        return "".join(self.out)

    def _end_paragraph(self) -> None:
        text = "".join(self.paragraph).strip()
        if text:
            self.out.append(f"<p>{text}</p>")
        self.paragraph.clear()

    def _end_items(self) -> None:
        if self.stray_items:
            self.out.append(f"<ul>{''.join(self.stray_items)}</ul>")
        self.stray_items.clear()


def _list(tag: str, children: list[_Node]) -> str:
    items = _items(children)
    return f"<{tag}>{''.join(items)}</{tag}>" if items else ""


def _items(children: list[_Node]) -> list[str]:
    """A list's items: its `<li>`s, a list inside it joined in, loose text made an item of its own."""
    items: list[str] = []
    loose: list[_Node] = []

    def end_loose() -> None:
        if loose:
            items.append(_item(_Node("li", children=list(loose))))
        loose.clear()

    for child in children:
        if child.tag == "li":
            end_loose()
            items.append(_item(child))
        elif child.tag in _LISTS:
            end_loose()
            items.extend(_items(child.children))
        else:
            loose.append(child)
    end_loose()
    return [item for item in items if item != "<li></li>"]


def _item(node: _Node) -> str:
    return f"<li>{''.join(_inline(child) for child in node.children).strip()}</li>"


def _inline(node: _Node) -> str:
    """Text and inline tags as they are; any block inside is flattened to its words."""
    if not node.tag:
        return node.text
    if node.tag == "br":
        return "<br>"
    inner = "".join(_inline(child) for child in node.children)
    if node.tag in _INLINE:
        return f"<{node.tag}>{inner}</{node.tag}>"
    return f" {inner} "


def _parse(markup: str) -> list[_Node]:
    root = _Node("root")
    stack = [root]
    position = 0
    for match in _TOKEN.finditer(markup):
        if match.start() > position:
            stack[-1].children.append(_Node("", markup[position:match.start()]))
        position = match.end()
        closing, tag = match.group(1), match.group(2)
        if tag == "br":
            stack[-1].children.append(_Node("br"))
        elif not closing:
            if len(stack) <= MAX_DEPTH:
                node = _Node(tag)
                stack[-1].children.append(node)
                stack.append(node)
        elif any(open_.tag == tag for open_ in stack[1:]):  # closes it and whatever is open in it
            depth = max(i for i, open_ in enumerate(stack) if open_.tag == tag)
            del stack[depth:]
    if position < len(markup):
        stack[-1].children.append(_Node("", markup[position:]))
    return root.children
