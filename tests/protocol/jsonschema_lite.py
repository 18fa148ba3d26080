"""A small JSON Schema (draft 2020-12) validator for the keywords docs/schemas uses.

The project does not depend on ``jsonschema``; when it is installed the schema tests use it
as well. This one refuses keywords it does not know, so a schema can never be "validated"
by silently ignoring part of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples"})
KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "$ref",
        "$defs",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
    }
)


def _is_type(value: object, name: str) -> bool:
    match name:
        case "null":
            return value is None
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            if isinstance(value, bool):
                return False
            return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        case "number":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        case "string":
            return isinstance(value, str)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
    raise ValueError(f"unknown type {name!r}")


def _equal(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0, but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


class Validator:
    """Validates instances against one root schema (``$ref`` resolves ``#/$defs/...`` in it)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.check_keywords(root)

    def check_keywords(self, schema: object, path: str = "#") -> None:
        """Raise ValueError for any keyword this validator does not implement."""
        if isinstance(schema, bool):
            return
        if not isinstance(schema, dict):
            raise ValueError(f"{path}: a schema must be an object or a boolean")
        for key, value in schema.items():
            if key in ANNOTATIONS:
                continue
            if key not in KEYWORDS:
                raise ValueError(f"{path}: unsupported keyword {key!r}")
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    self.check_keywords(sub, f"{path}/{key}/{name}")
            elif key in ("allOf", "anyOf", "oneOf"):
                for i, sub in enumerate(value):
                    self.check_keywords(sub, f"{path}/{key}/{i}")
            elif key in ("additionalProperties", "propertyNames", "items", "not", "if", "then", "else"):
                self.check_keywords(value, f"{path}/{key}")

    def errors(self, instance: object) -> list[str]:
        """Every violation, as 'location: problem'; empty when the instance is valid."""
        return list(self._errors(self.root, instance, "$"))

    def is_valid(self, instance: object) -> bool:
        """Whether ``instance`` satisfies the schema."""
        return not self.errors(instance)

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def _errors(self, schema: Any, value: Any, at: str) -> Iterator[str]:
        if schema is True:
            return
        if schema is False:
            yield f"{at}: no value is allowed here"
            return
        if "$ref" in schema:
            yield from self._errors(self._resolve(schema["$ref"]), value, at)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, t) for t in types):
                yield f"{at}: is not of type {types}"
                return
        if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
            yield f"{at}: {value!r} is not one of {schema['enum']}"
        if "const" in schema and not _equal(value, schema["const"]):
            yield f"{at}: must be {schema['const']!r}"
        if _is_type(value, "number"):
            if "minimum" in schema and value < schema["minimum"]:
                yield f"{at}: {value} is below {schema['minimum']}"
            if "maximum" in schema and value > schema["maximum"]:
                yield f"{at}: {value} is above {schema['maximum']}"
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                yield f"{at}: is shorter than {schema['minLength']}"
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                yield f"{at}: is longer than {schema['maxLength']}"
            if "pattern" in schema and not re.search(schema["pattern"], value):
                yield f"{at}: does not match {schema['pattern']}"
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                yield f"{at}: has fewer than {schema['minItems']} items"
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                yield f"{at}: has more than {schema['maxItems']} items"
            if schema.get("uniqueItems") and any(_equal(a, b) for i, a in enumerate(value) for b in value[i + 1 :]):
                yield f"{at}: has duplicate items"
            if "items" in schema:
                for i, item in enumerate(value):
                    yield from self._errors(schema["items"], item, f"{at}[{i}]")
        if isinstance(value, dict):
            yield from self._object_errors(schema, value, at)
        for sub in schema.get("allOf", []):
            yield from self._errors(sub, value, at)
        if "anyOf" in schema and not any(self._ok(sub, value, at) for sub in schema["anyOf"]):
            yield f"{at}: matches none of anyOf"
        if "oneOf" in schema and sum(self._ok(sub, value, at) for sub in schema["oneOf"]) != 1:
            yield f"{at}: does not match exactly one of oneOf"
        if "not" in schema and self._ok(schema["not"], value, at):
            yield f"{at}: matches a schema it must not match"
        if "if" in schema:
            branch = schema.get("then") if self._ok(schema["if"], value, at) else schema.get("else")
            if branch is not None:
                yield from self._errors(branch, value, at)

    def _object_errors(self, schema: Any, value: dict[str, Any], at: str) -> Iterator[str]:
        for key in schema.get("required", []):
            if key not in value:
                yield f"{at}: {key!r} is required"
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            yield f"{at}: has fewer than {schema['minProperties']} properties"
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            yield f"{at}: has more than {schema['maxProperties']} properties"
        properties = schema.get("properties", {})
        for key, item in value.items():
            if "propertyNames" in schema:
                yield from self._errors(schema["propertyNames"], key, f"{at}.{key} (name)")
            if key in properties:
                yield from self._errors(properties[key], item, f"{at}.{key}")
            elif "additionalProperties" in schema:
                yield from self._errors(schema["additionalProperties"], item, f"{at}.{key}")

    def _ok(self, schema: Any, value: Any, at: str) -> bool:
        return not any(True for _ in self._errors(schema, value, at))
