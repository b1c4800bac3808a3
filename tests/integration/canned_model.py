"""A model server answering what a test scripts, for answers the OpenAI stand-in cannot give: a
good translation that quotes English, a translation cut off whatever its budget.

The vision call gets `english`; the n-th translation call the n-th of `translations` (the last
one again after that): a dict of language → HTML, None for an answer cut off at its
`max_output_tokens`, or a `Refused` HTTP error. Every translation call's `max_output_tokens` is
recorded in `budgets`, the languages it asks for in `asked`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.servers import serve

CUT_OFF = None
# What every answer (vision or translation) reports: `input_tokens`, and `output_tokens` of 1 + a
# quarter of its text's characters (or its whole budget, cut off).
INPUT_TOKENS = 100
SERVER_ERROR = {"error": {"message": "The server had an error", "type": "server_error", "param": None,
                          "code": None}}


@dataclass(frozen=True)
class Refused:
    """A translation call answered with this HTTP error (OpenAI's 5xx body) that the API says not to
    retry (`x-should-retry: false`), after `after_s` seconds (a model that answers too late)."""

    status: int
    after_s: float = 0.0


@dataclass
class CannedModel:
    """What the model answers, and the budgets translations were asked with."""

    english: str
    translations: list[Mapping[str, str] | Refused | None]
    budgets: list[int] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: Mapping[str, Any]) -> dict[str, Any] | Refused:
        """A Responses API body for one request."""
        if body.get("text", {}).get("format", {}).get("type") != "json_schema":
            return _response(self.english)
        with self._lock:
            self.budgets.append(int(body["max_output_tokens"]))
            self.asked.append(list(body["text"]["format"]["schema"]["required"]))
            scripted = self.translations[min(len(self.budgets), len(self.translations)) - 1]
        if isinstance(scripted, Refused):
            return scripted
        if scripted is CUT_OFF:
            return {"object": "response", "status": "incomplete", "output": [],
                    "incomplete_details": {"reason": "max_output_tokens"},
                    "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": int(body["max_output_tokens"])}}
        return _response(json.dumps(dict(scripted), ensure_ascii=False))


def _response(text: str) -> dict[str, Any]:
    return {"object": "response", "status": "completed",
            "output": [{"type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": len(text) // 4 + 1}}


@contextmanager
def canned_model(english: str,
                 translations: list[Mapping[str, str] | Refused | None]) -> Iterator[CannedModel]:
    """A CannedModel served on loopback; its `url` is the OpenAI base URL (…/v1)."""
    model = CannedModel(english, translations)

    class Model(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = model.answer(request)
            status, headers = 200, {"Content-Type": "application/json"}
            if isinstance(answer, Refused):
                time.sleep(answer.after_s)
                status, answer = answer.status, SERVER_ERROR
                headers["x-should-retry"] = "false"
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            """Say nothing."""

    with serve(Model) as url:
        model.url = f"{url}/v1"
        yield model
