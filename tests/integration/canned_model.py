"""A model server answering what a test scripts, for answers the OpenAI stand-in cannot give: a
good translation that quotes English, a translation cut off whatever its budget.

The vision call gets `english`; the n-th translation call the n-th of `translations` (the last
one again after that): a dict of language → HTML, or None for an answer cut off at its
`max_output_tokens`. Every translation call's `max_output_tokens` is recorded in `budgets`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.servers import serve

CUT_OFF = None


@dataclass
class CannedModel:
    """What the model answers, and the budgets translations were asked with."""

    english: str
    translations: list[Mapping[str, str] | None]
    budgets: list[int] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A Responses API body for one request."""
        if body.get("text", {}).get("format", {}).get("type") != "json_schema":
            return _response(self.english)
        with self._lock:
            self.budgets.append(int(body["max_output_tokens"]))
            scripted = self.translations[min(len(self.budgets), len(self.translations)) - 1]
        if scripted is CUT_OFF:
            return {"object": "response", "status": "incomplete", "output": [],
                    "incomplete_details": {"reason": "max_output_tokens"},
                    "usage": {"input_tokens": 100, "output_tokens": int(body["max_output_tokens"])}}
        return _response(json.dumps(dict(scripted), ensure_ascii=False))


def _response(text: str) -> dict[str, Any]:
    return {"object": "response", "status": "completed",
            "output": [{"type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 100, "output_tokens": len(text) // 4 + 1}}


@contextmanager
def canned_model(english: str, translations: list[Mapping[str, str] | None]) -> Iterator[CannedModel]:
    """A CannedModel served on loopback; its `url` is the OpenAI base URL (…/v1)."""
    model = CannedModel(english, translations)

    class Model(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(model.answer(request)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            """Say nothing."""

    with serve(Model) as url:
        model.url = f"{url}/v1"
        yield model
