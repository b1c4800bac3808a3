"""The published JSON Schemas of the public events, one file per event type and version.

`python -m lotlens_common.event_schemas docs/events/schemas` releases the current models' schemas:
a new type or version gets its file; a changed one replaces the released file only if it is
compatible both ways (`schema_compat`), otherwise the change needs a new version and an upcaster.
`make test` checks the models against the released files the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lotlens_common.catalogue import PUBLIC_EVENTS, open_schema
from lotlens_common.envelope import dataschema
from lotlens_common.events import Event
from lotlens_common.schema_compat import backward, forward


class IncompatibleChange(ValueError):
    """A public event changed in a way its subscribers cannot follow."""


def public_schema(event: type[Event]) -> dict[str, Any]:
    """The schema of an event's `data` as subscribers should read it: what the model validates,
    with an open content model (subscribers ignore fields they do not know)."""
    schema = open_schema(event)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": dataschema(event.event_type, event.version), **schema, "title": event.event_type}


def schema_path(directory: Path, event: type[Event]) -> Path:
    """Where an event's released schema lives."""
    return directory / event.event_type / f"v{event.version}.json"


def incompatibilities(event: type[Event], released: dict[str, Any]) -> list[str]:
    """Why the current model breaks consumers of the released schema or old events (empty: it does not)."""
    current = public_schema(event)
    return ([f"BACKWARD {p}" for p in backward(current, released)]
            + [f"FORWARD {p}" for p in forward(current, released)] + removed(current, released))


# Fields removed from a released schema knowingly, with why: always null, nobody could read a value.
REMOVED_KNOWINGLY = {
    (dataschema("JobCompleted", 1), "$.usage.by_model.*.model"):
        "always null; the block's key is the model (ccd6365)",
}


def removed(current: dict[str, Any], released: dict[str, Any]) -> list[str]:
    """The released fields (every path, nested objects' included) the current schema no longer has.

    An open content model lets a field with a default go both ways, yet our consumers ignore what
    they do not know (`envelope.decode`): an older one reading a renamed optional field took its
    default (`total_lots` read 0), silently. A released field stays; a new name is a new version.
    """
    now = field_paths(current)
    return [f"REMOVED {path}: a released field stays; a new name needs a new version"
            for path in sorted(field_paths(released) - now)
            if (released.get("$id"), path) not in REMOVED_KNOWINGLY]


def field_paths(schema: dict[str, Any]) -> set[str]:
    """Every field's path (`$.usage.by_model.*.model`), following `$ref`s, unions, maps (`*`) and
    arrays (`[]`)."""
    definitions = schema.get("$defs", {})
    found: set[str] = set()

    def walk(node: dict[str, Any], path: str, seen: frozenset[str]) -> None:
        if ref := node.get("$ref"):
            name = str(ref).rsplit("/", 1)[-1]
            if name not in seen:
                walk(definitions.get(name, {}), path, seen | {name})
            return
        for option in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", []):
            walk(option, path, seen)
        for name, sub in node.get("properties", {}).items():
            found.add(f"{path}.{name}")
            walk(sub, f"{path}.{name}", seen)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*", seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]", seen)

    walk(schema, "$", frozenset())
    return found


def release(directory: Path) -> list[Path]:
    """Write the schema of every public event whose file is missing or compatibly changed;
    returns the files written. Raises `IncompatibleChange` (writing nothing) on a breaking change."""
    pending: list[tuple[Path, dict[str, Any]]] = []
    for event in PUBLIC_EVENTS:
        path, schema = schema_path(directory, event), public_schema(event)
        if path.exists():
            released = json.loads(path.read_text())
            if released == schema:
                continue
            if found := incompatibilities(event, released):
                raise IncompatibleChange(f"{event.event_type} v{event.version}: {found}; bump its version "
                                         "and add an upcaster instead")
        pending.append((path, schema))
    for path, schema in pending:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return [path for path, _ in pending]


def main() -> None:
    """Release into the directory given as the only argument."""
    for path in release(Path(sys.argv[1])):
        print(f"released {path}")


if __name__ == "__main__":
    main()
