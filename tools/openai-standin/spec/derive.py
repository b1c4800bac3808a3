"""Derive `openai-subset.json` from the official OpenAPI description: the operations the stand-in serves.

Usage: `python tools/openai-standin/spec/derive.py /path/to/openai-openapi/openapi.yaml`

Keeps, for each operation in OPERATIONS, its method, path, request schema and answer schemas, plus
every component schema those reach through `$ref` (and `ErrorResponse`, the body of every error).
Drops prose (`description`, `title`, `example(s)`, `x-*` extensions) to keep the file small; a
property that happens to be NAMED `description` is kept. One documented relaxation: a property
that is not `required` may be `null`, as the real API sends (the description's own examples show
`"output_file_id": null`, `"failed_at": null` where the schema says `type: string` / `integer`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = "openai/openai-openapi@f85dbe223d40e1a31cba812ab2d755c7e98a92a3 openapi.yaml"
OPERATIONS = ("createFile", "retrieveFile", "deleteFile", "downloadFile", "createBatch", "listBatches",
              "retrieveBatch", "cancelBatch", "createResponse", "createChatCompletion")
ALWAYS = ("ErrorResponse",)
PROSE = {"description", "title", "example", "examples", "summary", "deprecated"}
# Keywords whose value maps names to schemas: the names are data, not keywords.
SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
# Keywords whose value is data, never a schema.
DATA = {"enum", "const", "default", "required"}
PREFIX = "#/components/schemas/"


def clean(node: Any) -> Any:
    """A schema without prose or extensions, optional properties made nullable."""
    if isinstance(node, list):
        return [clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in PROSE or key.startswith("x-"):
            continue
        if key in DATA:
            out[key] = value
        elif key == "oneOf" and "discriminator" in node:
            out["anyOf"] = clean(value)
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: clean(sub) for name, sub in value.items()}
        else:
            out[key] = clean(value)
    required = set(out.get("required") or ())
    properties = out.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {name: sub if name in required else {"anyOf": [sub, {"type": "null"}]}
                             for name, sub in properties.items()}
    return out


def refs(node: Any) -> set[str]:
    """Names of the component schemas a node points at."""
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"][len(PREFIX):]} if str(node.get("$ref", "")).startswith(PREFIX) else set()
    return found.union(*(refs(value) for key, value in node.items() if key not in DATA))


def _body_schema(content: dict[str, Any] | None) -> dict[str, Any] | None:
    if not content:
        return None
    for media in ("application/json", "multipart/form-data"):
        if media in content and "schema" in content[media]:
            return {"media": media, "schema": clean(content[media]["schema"])}
    return None


def operations(spec: dict[str, Any]) -> dict[str, Any]:
    """The kept operations, by operationId."""
    found: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or operation.get("operationId") not in OPERATIONS:
                continue
            answers = {status: _body_schema(answer.get("content"))
                       for status, answer in operation.get("responses", {}).items()}
            found[operation["operationId"]] = {
                "method": method.upper(), "path": "/v1" + path,
                "request": _body_schema((operation.get("requestBody") or {}).get("content")),
                "responses": answers,
            }
    missing = set(OPERATIONS) - set(found)
    if missing:
        raise SystemExit(f"operations not in the description: {sorted(missing)}")
    return found


def derive(spec: dict[str, Any], digest: str) -> dict[str, Any]:
    """The subset document."""
    kept_operations = operations(spec)
    schemas = spec["components"]["schemas"]
    wanted, todo = set(), refs(kept_operations) | set(ALWAYS)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo |= refs(schemas[name])
    return {"source": SOURCE, "source_sha256": digest, "derived_by": "tools/openai-standin/spec/derive.py",
            "operations": kept_operations,
            "components": {"schemas": {name: clean(schemas[name]) for name in sorted(wanted)}}}


def main() -> None:
    """Read the description given on the command line, write the subset next to this script."""
    source = Path(sys.argv[1])
    raw = source.read_bytes()
    subset = derive(yaml.safe_load(raw), hashlib.sha256(raw).hexdigest())
    target = Path(__file__).with_name("openai-subset.json")
    target.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"{target}: {len(subset['operations'])} operations, {len(subset['components']['schemas'])} schemas")


if __name__ == "__main__":
    main()
