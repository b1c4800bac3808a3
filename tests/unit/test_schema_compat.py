"""The compatibility checker on small schemas: each registry rule, both directions."""

from __future__ import annotations

from typing import Any

import pytest

from lotlens_common.schema_compat import backward, forward, problems

STRING: dict[str, Any] = {"type": "string"}


def obj(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def test_identical_schemas_are_compatible_both_ways() -> None:
    schema = obj(["a"], a=STRING, b={"anyOf": [{"type": "integer"}, {"type": "null"}]})
    assert backward(schema, schema) == forward(schema, schema) == []


def test_an_added_optional_field_is_compatible_both_ways() -> None:
    old, new = obj(["a"], a=STRING), obj(["a"], a=STRING, b={"type": "integer", "default": 0})
    assert backward(new, old) == forward(new, old) == []


def test_an_added_required_field_breaks_backward_only() -> None:
    old, new = obj(["a"], a=STRING), obj(["a", "b"], a=STRING, b=STRING)
    assert backward(new, old) == ["$.b: required by the reader, not written by the writer"]
    assert forward(new, old) == []


def test_a_removed_required_field_breaks_forward_only() -> None:
    old, new = obj(["a", "b"], a=STRING, b=STRING), obj(["a"], a=STRING)
    assert backward(new, old) == []
    assert forward(new, old) == ["$.b: required by the reader, not written by the writer"]


def test_a_changed_type_breaks_both_ways() -> None:
    old, new = obj(["a"], a=STRING), obj(["a"], a={"type": "integer"})
    assert backward(new, old) and forward(new, old)


def test_integers_widened_to_numbers_break_forward_only() -> None:
    old, new = obj(["a"], a={"type": "integer"}), obj(["a"], a={"type": "number"})
    assert backward(new, old) == []
    assert forward(new, old) == ["$.a: the writer may write ['number'], the reader takes ['integer']"]


def test_a_field_made_nullable_breaks_forward_only() -> None:
    old, new = obj(["a"], a=STRING), obj(["a"], a={"anyOf": [STRING, {"type": "null"}]})
    assert backward(new, old) == []
    assert forward(new, old)


def test_an_enumeration_widened_breaks_forward_narrowed_breaks_backward() -> None:
    small = obj(["s"], s={"type": "string", "enum": ["a", "b"]})
    large = obj(["s"], s={"type": "string", "enum": ["a", "b", "c"]})
    assert backward(large, small) == [] and forward(large, small) == ["$.s: the writer may write ['c'], "
                                                                      "which the reader does not take"]
    assert backward(small, large) and forward(small, large) == []


def test_a_format_added_by_the_reader_breaks_and_dropped_does_not() -> None:
    plain, dated = {"type": "string"}, {"type": "string", "format": "date-time"}
    assert problems(dated, plain) and problems(plain, dated) == []


def test_array_items_and_map_values_are_compared_inside() -> None:
    old = obj(["xs", "m"], xs={"type": "array", "items": STRING},
              m={"type": "object", "additionalProperties": STRING})
    new = obj(["xs", "m"], xs={"type": "array", "items": {"type": "integer"}},
              m={"type": "object", "additionalProperties": {"type": "integer"}})
    assert sorted(p.split(":")[0] for p in forward(new, old)) == ["$.m.*", "$.xs[]"]


def test_local_references_are_followed() -> None:
    defs = {"$defs": {"Lot": obj(["id"], id=STRING)}}
    old = {**obj(["lot"], lot={"$ref": "#/$defs/Lot"}), **defs}
    new = {**obj(["lot"], lot={"$ref": "#/$defs/Lot"}),
           "$defs": {"Lot": obj(["id", "seq"], id=STRING, seq={"type": "integer"})}}
    assert backward(new, old) == ["$.lot.seq: required by the reader, not written by the writer"]


def test_an_unknown_keyword_is_reported_not_passed() -> None:
    odd = obj(["a"], a={"type": "string", "pattern": "^x"})
    assert "does not understand" in problems(odd, obj(["a"], a=STRING))[0]


def test_a_remote_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="local"):
        problems({"$ref": "https://example.com/s.json"}, STRING)
