"""Credentials taken out of texts that reach logs, traces and error messages.

An HTTP library's error can quote the request it failed on: h11 refused a key read with a trailing
newline with `Illegal header value b'Bearer sk-...\\n'`, and that text was the error's message in
every log line and span about it. OpenAI's own messages can quote a signed image URL whole.
"""

from __future__ import annotations

import re

# The token of an Authorization value (up to a quote or whitespace; a repr's `\n` is kept in it).
_BEARER = re.compile(r"(?i)\b(Bearer\s+)[^\s'\"]+")
# OpenAI secret keys by their shape, wherever they are quoted (its own messages mask them).
_SECRET_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
# A URL's userinfo and query: customers' image URLs carry their signatures there (S3's
# X-Amz-Signature, GCS's X-Goog-Signature, Azure's sig=), webhook URLs their tokens. The scheme in
# any case, as intake takes it (`urls.py`: `HTTPS://` was printed whole), and both in one match
# (cutting the userinfo first left that URL's query whole).
_URL_SECRETS = re.compile(r"((?i:https?)://)(?:[^/\s\"'?#@<>]*@)?([^\s\"'?#<>]*)([?#][^\s\"'<>]*)?")
REDACTED = "[redacted]"


def redacted(text: str) -> str:
    """`text` without Authorization values, OpenAI keys, or URLs' userinfo and query strings."""
    text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    text = _SECRET_KEY.sub(REDACTED, text)
    return _URL_SECRETS.sub(lambda m: m.group(1) + m.group(2) + (f"?{REDACTED}" if m.group(3) else ""), text)
