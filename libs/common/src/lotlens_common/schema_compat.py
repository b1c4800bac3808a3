"""Schema-registry compatibility of two JSON Schemas, for the subset pydantic emits.

`problems(reader, writer)` lists why data written under `writer` might not be read under
`reader`. A registry's BACKWARD check is `problems(new, old)` (consumers on the new schema read
old events, e.g. the ones kept on the topics), FORWARD is `problems(old, new)` (consumers built
on the last release read new events); FULL is both.

The contract the rules assume (the one the README gives subscribers): a writer writes every
property its schema declares, and a reader ignores properties it does not know. So a reader's
required property must be declared by the writer, and every property both declare must accept
the writer's values. This is Avro's resolution rule, and a registry's JSON Schema check with
open content models for readers.

Understood: `type` (one or a list), `enum`, `const`, `format`, `anyOf`/`oneOf`, `items`,
`prefixItems`, `properties`, `required`, `additionalProperties`, and local `$ref`s into `$defs`.
Keywords it does not know are reported, never silently passed.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly",
                          "writeOnly", "$schema", "$id", "$comment"})
_KNOWN = _ANNOTATIONS | {"type", "enum", "const", "format", "anyOf", "oneOf", "items", "prefixItems",
                         "properties", "required", "additionalProperties", "$ref", "$defs"}


def backward(new: Schema, old: Schema) -> list[str]:
    """Why consumers on `new` might fail on events written under `old` (empty: compatible)."""
    return problems(new, old)


def forward(new: Schema, old: Schema) -> list[str]:
    """Why consumers on `old` might fail on events written under `new` (empty: compatible)."""
    return problems(old, new)


def problems(reader: Schema, writer: Schema) -> list[str]:
    """Why some value valid under `writer` might be rejected or misread under `reader`."""
    return _Check(reader, writer).compare(reader, writer, "$")


class _Check:
    def __init__(self, reader_root: Schema, writer_root: Schema) -> None:
        self._defs = (reader_root.get("$defs", {}), writer_root.get("$defs", {}))

    def compare(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        reader, writer = self._resolve(reader, 0), self._resolve(writer, 1)
        unknown = sorted((set(reader) | set(writer)) - _KNOWN)
        if unknown:
            return [f"{path}: keywords this checker does not understand: {unknown}"]
        if _branches(writer):
            return [p for branch in _branches(writer) for p in self.compare(reader, branch, path)]
        if _branches(reader):
            found = [self.compare(branch, writer, path) for branch in _branches(reader)]
            return [] if any(not f for f in found) else [f"{path}: no alternative of the reader accepts "
                                                         f"the writer's {_show(writer)}"]
        return self._values(reader, writer, path) or self._structure(reader, writer, path)

    def _resolve(self, schema: Schema, side: int) -> Schema:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"only local $refs are understood: {ref}")
        return self._resolve(self._defs[side][ref.removeprefix("#/$defs/")], side)

    def _values(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        """Types, enumerations and formats: the writer's values must be a subset of the reader's."""
        reader_types, writer_types = _types(reader), _types(writer)
        if writer_types is None and _values_of(writer) is not None:
            writer_types = {_json_type(v) for v in _values_of(writer) or []}
        if reader_types is not None:
            if writer_types is None:
                return [f"{path}: the reader wants {sorted(reader_types)}, the writer may write anything"]
            widened = {t for t in writer_types if t not in reader_types
                       and not (t == "integer" and "number" in reader_types)}
            if widened:
                return [f"{path}: the writer may write {sorted(widened)}, "
                        f"the reader takes {sorted(reader_types)}"]
        reader_values, writer_values = _values_of(reader), _values_of(writer)
        if reader_values is not None:
            if writer_values is None:
                return [f"{path}: the reader takes only {reader_values}, the writer any {_show(writer)}"]
            extra = [v for v in writer_values if v not in reader_values]
            if extra:
                return [f"{path}: the writer may write {extra}, which the reader does not take"]
        if "format" in reader and reader.get("format") != writer.get("format"):
            return [f"{path}: the reader wants format {reader['format']!r}, "
                    f"the writer's is {writer.get('format')!r}"]
        return []

    def _structure(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        """Arrays and objects, property by property."""
        found: list[str] = []
        if "items" in reader or "prefixItems" in reader:
            found += self._items(reader, writer, path)
        if "properties" in reader or "required" in reader or "properties" in writer:
            written = set(writer.get("properties", {}))
            for name in reader.get("required", []):
                if name not in written:
                    found.append(f"{path}.{name}: required by the reader, not written by the writer")
            for name, schema in reader.get("properties", {}).items():
                if name in written:
                    found += self.compare(schema, writer["properties"][name], f"{path}.{name}")
        reader_extra = reader.get("additionalProperties")
        if isinstance(reader_extra, dict) and reader_extra:
            writer_extra = writer.get("additionalProperties", {})
            if writer_extra is False:
                return found
            found += self.compare(reader_extra, writer_extra if isinstance(writer_extra, dict) else {},
                                  f"{path}.*")
        return found

    def _items(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        reader_prefix, writer_prefix = reader.get("prefixItems", []), writer.get("prefixItems", [])
        found: list[str] = []
        for i, schema in enumerate(reader_prefix):
            other = writer_prefix[i] if i < len(writer_prefix) else writer.get("items", {})
            found += self.compare(schema, other if isinstance(other, dict) else {}, f"{path}[{i}]")
        if isinstance(reader.get("items"), dict):
            rest = [*writer_prefix[len(reader_prefix):], writer.get("items", {})]
            for schema in rest:
                if isinstance(schema, dict):
                    found += self.compare(reader["items"], schema, f"{path}[]")
        return found


def _branches(schema: Schema) -> list[Schema]:
    return list(schema.get("anyOf") or schema.get("oneOf") or [])


def _types(schema: Schema) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _values_of(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if "enum" in schema else None


def _show(schema: Schema) -> str:
    shown = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    return str(shown or "value")
