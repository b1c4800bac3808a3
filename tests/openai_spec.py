"""The stand-in's traffic held to the official OpenAI description (the subset in tools/openai-standin/spec).

`OpenAISpec` checks one request or answer; `SpecRecorder` is an ASGI middleware that checks every
exchange of a running stand-in: each request it accepts (2xx), each answer it gives (errors against
`ErrorResponse`), and the lines of batch files (each answered request's body against the
endpoint's request schema, each output body against its answer schema). Violations are collected,
and `serve_standin` fails the test that caused them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET = Path(__file__).resolve().parents[1] / "tools/openai-standin/spec/openai-subset.json"
BASE = "urn:openai-subset"
ENDPOINT_OPERATIONS = {"/v1/responses": "createResponse", "/v1/chat/completions": "createChatCompletion"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Operation:
    """One operation of the subset: its id, method and path pattern."""

    id: str
    method: str
    pattern: re.Pattern[str]
    answers: dict[str, Any]
    has_request: bool


class OpenAISpec:
    """Validation against the derived subset; `$ref`s resolve inside the subset, never over the network."""

    def __init__(self, path: Path = SUBSET) -> None:
        self.document: dict[str, Any] = json.loads(path.read_text())
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self.operations = [
            Operation(name, op["method"], re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", op["path"]) + "$"),
                      op["responses"], op["request"] is not None)
            for name, op in self.document["operations"].items()]

    @cache  # noqa: B019 - one instance per process; validators are costly to build
    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{BASE}#{pointer}"}, registry=self._registry)

    def errors(self, pointer: str, instance: object) -> list[str]:
        """Why `instance` is not valid against the schema at a JSON pointer of the subset (empty if valid)."""
        found = sorted(self._validator(pointer).iter_errors(instance), key=lambda e: e.path)
        # best_match descends into anyOf/oneOf to the branch that came closest: a message that says why.
        leaves = [best_match([error]) or error for error in found[:5]]
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in leaves]

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation serving this method and path."""
        return next((op for op in self.operations if op.method == method and op.pattern.match(path)), None)

    def request_errors(self, operation_id: str, body: object) -> list[str]:
        """Problems of a request body for an operation."""
        return self.errors(f"/operations/{operation_id}/request/schema", body)

    def answer_errors(self, operation_id: str, status: int, body: object) -> list[str]:
        """Problems of an answer: errors against `ErrorResponse`, successes against the operation's schema."""
        if status >= 400:
            return self.errors("/components/schemas/ErrorResponse", body)
        if self.document["operations"][operation_id]["responses"].get(str(status)) is None:
            return [f"status {status} is not an answer of {operation_id}"]
        return self.errors(f"/operations/{operation_id}/responses/{status}/schema", body)


def batch_lines_of_upload(content_type: str, body: bytes) -> dict[str, dict[str, Any]]:
    """custom_id → input line, from a multipart upload with purpose `batch` (empty for anything else)."""
    head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    purpose, upload = parts.get("purpose"), parts.get("file")
    if purpose is None or upload is None or purpose.get_content().strip() != "batch":
        return {}
    lines: dict[str, dict[str, Any]] = {}
    payload = upload.get_payload(decode=True)
    assert isinstance(payload, bytes), "a multipart file part decodes to bytes"
    for raw in payload.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            lines[line["custom_id"]] = line
    return lines


@dataclass
class SpecRecorder:
    """ASGI middleware: checks every exchange with the stand-in and keeps the violations."""

    app: App
    spec: OpenAISpec
    violations: list[str] = field(default_factory=list)
    exchanges: int = 0
    _uploads: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _results: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the exchange through, keeping copies of both bodies to check afterwards."""
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        request, answer, status = bytearray(), bytearray(), [0]

        async def receiving() -> Message:
            message = await receive()
            request.extend(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer.extend(message.get("body", b""))
            await send(message)

        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            await self.app(scope, receiving, sending)
        finally:
            # Also when the app raised (after Starlette answered its plain-text 500): checked only
            # after a clean return, such a crash ended with no exchange and no violation counted.
            self.check(scope["method"], scope["path"], headers.get("content-type", ""), bytes(request),
                       status[0], bytes(answer))

    def _fail(self, where: str, problems: list[str]) -> None:
        self.violations.extend(f"{where}: {problem}" for problem in problems)

    def check(self, method: str, path: str, content_type: str, request: bytes, status: int,
              answer: bytes) -> None:
        """Check one exchange (the spec has no schema for file contents: their lines are checked instead)."""
        self.exchanges += 1
        operation = self.spec.operation(method, path)
        where = f"{method} {path} → {status}"
        if operation is None:
            self._fail(where, ["not an operation of the OpenAI description"])
            return
        if operation.id == "downloadFile" and status == 200:
            self._check_result_lines(path.split("/")[3], answer)
            return
        try:
            body = json.loads(answer) if answer else None
        except ValueError:
            self._fail(where, [f"the answer is not JSON: {answer[:100]!r}"])
            return
        self._fail(where + " (answer)", self.spec.answer_errors(operation.id, status, body))
        if status >= 300:
            return
        if operation.id == "createFile":
            assert body is not None, "createFile answered without a body"
            self._uploads[body["id"]] = batch_lines_of_upload(content_type, request)
        elif operation.has_request:
            self._fail(where + " (request)", self.spec.request_errors(operation.id, json.loads(request)))
        batches = body.get("data", [body]) if isinstance(body, dict) else []
        for batch in batches:
            if batch.get("object") == "batch":
                for result in (batch.get("output_file_id"), batch.get("error_file_id")):
                    if result:
                        self._results[result] = (batch["input_file_id"], batch["endpoint"])

    def _check_result_lines(self, file_id: str, content: bytes) -> None:
        if file_id not in self._results:
            return
        input_file, endpoint = self._results[file_id]
        operation = ENDPOINT_OPERATIONS[endpoint]
        inputs = self._uploads.get(input_file, {})
        for raw in content.splitlines():
            line = json.loads(raw)
            where = f"batch result {line.get('custom_id')} of {file_id}"
            response = line.get("response")
            if response is None:
                if not isinstance(line.get("error"), dict):
                    self._fail(where, ["neither response nor error"])
                continue
            status = int(response["status_code"])
            self._fail(where + " (answer)", self.spec.answer_errors(operation, status, response["body"]))
            request = inputs.get(line["custom_id"])
            if status == 200 and request is not None:
                self._fail(where + " (request)", self.spec.request_errors(operation, request["body"]))
