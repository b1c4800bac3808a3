"""Requests whose target is a whole URL (absolute form) are served as the path they name.

RFC 9112 3.2.2: a server MUST accept `GET http://host:port/api/v1/batch-status/<id> HTTP/1.1`,
the form an HTTP/1.1 client sends to a proxy, and some send to a server behind one. uvicorn's
h11 protocol puts the whole target in the scope's path, so every such request answered 404.
Signatures are unaffected: they cover the job id of the path or the raw query string, and the
query string is the same in both forms.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

# scheme "://" authority [path]; the query is already apart (the scope's `query_string`). An
# authority with userinfo (`user@host`, RFC 9110 4.2.4: to be treated as an error) is not mapped.
_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://([^/?#@]*)(/[^?#]*)?")


class AbsoluteFormTarget:
    """Maps an absolute-form target to origin form: its path, and its authority as the Host."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its path (and Host) taken from an absolute-form target."""
        if scope["type"] == "http" and not scope["path"].startswith("/"):
            _to_origin_form(scope)
        await self._app(scope, receive, send)


def _to_origin_form(scope: Scope) -> None:
    # In place, as uvicorn's proxy-headers middleware changes a scope: the access log, metrics and
    # every middleware inside see the path the request names.
    target = _ABSOLUTE_FORM.fullmatch(scope.get("raw_path") or scope["path"].encode("latin-1"))
    if target is None:
        return
    authority, raw_path = target.group(1), target.group(2) or b"/"
    scope["raw_path"] = raw_path
    scope["path"] = unquote(raw_path.decode("latin-1"))
    # RFC 9112 3.2.2: the target's authority, not a Host header, names the host.
    scope["headers"] = [(b"host", authority),
                        *((name, value) for name, value in scope["headers"] if name.lower() != b"host")]
