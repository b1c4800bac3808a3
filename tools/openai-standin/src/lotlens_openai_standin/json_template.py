"""JSON documents encoded once with holes in them, each answer filled in by one `%` operation.

The lines of a batch share nearly all of their answer (a vision line's 2.5 kB hold about 250 bytes of
its own): the shared part is encoded once a shape, as orjson writes it, and `template % values`
writes a line's own values into it (orjson per line encoded the whole answer again, from a copy of
its shared fields).
"""

from __future__ import annotations

from typing import NamedTuple

import orjson


class Slot(NamedTuple):
    """A hole in a template: `text` is the JSON written there, its %-directives in it (`b'"resp_%b%b"'`
    for an id's hex digits, `b"%d"` for a number, `b"%b"` for a value encoded by the caller); `name`
    says what goes there."""

    name: str
    text: bytes


def encode_template(document: object) -> bytes:
    """`document` in orjson's compact encoding, its slots as their %-directives (every other `%`
    doubled): the values go in the order of the slots."""

    def encode(value: object) -> bytes:
        if isinstance(value, Slot):
            return value.text
        if isinstance(value, dict):
            fields = [encode(key) + b":" + encode(item) for key, item in value.items()]
            return b"{" + b",".join(fields) + b"}"
        if isinstance(value, list):
            return b"[" + b",".join([encode(item) for item in value]) + b"]"
        return orjson.dumps(value).replace(b"%", b"%%")

    return encode(document)
