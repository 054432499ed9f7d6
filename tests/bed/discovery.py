"""Request bodies checked against Google's published Compute v1 discovery document.

The fake GCE API would otherwise accept anything orchestrate sends, so a misspelt field, a
number where GCE wants a string or a missing required field would first be seen on a real
project. The document ships as static JSON inside ``google-api-python-client``
(``googleapiclient/discovery_cache/documents/compute.v1.json``), a test dependency; this
module reads only that file and does not import the client.

Errors read like Google's (JSON mapping of the proto messages):

- ``Invalid JSON payload received. Unknown name "x" at 'resource.scheduling': Cannot find
  field.``
- ``Invalid value at 'resource.disks[0].boot' (TYPE_BOOL), "yes"``
- ``Required field 'resource.name' not specified``
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

DOCUMENT = "discovery_cache/documents/compute.v1.json"

_PROTO_TYPES = {
    "string": "TYPE_STRING",
    "boolean": "TYPE_BOOL",
    "integer": "TYPE_INT32",
    "number": "TYPE_DOUBLE",
}


class SchemaViolation(ValueError):
    """One field of a request body that GCE would refuse with 400 INVALID_ARGUMENT."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    text = resources.files("googleapiclient").joinpath(DOCUMENT).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def revision() -> str:
    """The document's revision (a date, ``20261106``): which API surface the fake enforces."""
    return str(document()["revision"])


def request_schema(method_id: str) -> str:
    """The schema name of `method_id`'s request body (``compute.instances.insert`` ->
    ``Instance``)."""
    resource_path = method_id.split(".")[1:-1]
    node: dict[str, Any] = document()
    for name in resource_path:
        node = node["resources"][name]
    return str(node["methods"][method_id.rsplit(".", 1)[1]]["request"]["$ref"])


def validate(method_id: str, body: Any) -> None:
    """Raise `SchemaViolation` for the first field of `body` GCE would refuse."""
    schema = document()["schemas"][request_schema(method_id)]
    _check_object(schema, body, "resource", method_id)


def _check_object(schema: dict[str, Any], value: Any, where: str, method_id: str) -> None:
    if not isinstance(value, dict):
        raise SchemaViolation(
            where,
            f"Invalid value at '{where}' (type.googleapis.com/{schema.get('id')}), "
            f"{json.dumps(value)}",
        )
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _check_value(properties[key], item, f"{where}.{key}", method_id)
        elif extra is not None:
            _check_value(extra, item, f"{where}.{key}", method_id)
        else:
            raise SchemaViolation(
                where,
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field.",
            )
    for key, prop in properties.items():
        required = prop.get("annotations", {}).get("required", [])
        if method_id in required and key not in value:
            raise SchemaViolation(f"{where}.{key}", f"Required field '{where}.{key}' not specified")


def _check_value(schema: dict[str, Any], value: Any, where: str, method_id: str) -> None:
    if value is None:  # proto3 JSON: null is every field's default value
        return
    if "$ref" in schema:
        _check_object(document()["schemas"][schema["$ref"]], value, where, method_id)
        return
    kind = schema.get("type")
    if kind == "object":
        _check_object(schema, value, where, method_id)
    elif kind == "array":
        if not isinstance(value, list):
            raise SchemaViolation(where, f"Invalid value at '{where}', {json.dumps(value)}")
        for index, item in enumerate(value):
            _check_value(schema["items"], item, f"{where}[{index}]", method_id)
    elif not _scalar_ok(schema, value):
        proto = _PROTO_TYPES.get(str(kind), "TYPE_MESSAGE")
        if schema.get("format") in ("int64", "uint64"):
            proto = "TYPE_INT64" if schema["format"] == "int64" else "TYPE_UINT64"
        if "enum" in schema and isinstance(value, str):
            proto = "TYPE_ENUM"
        raise SchemaViolation(where, f"Invalid value at '{where}' ({proto}), {json.dumps(value)}")


def _scalar_ok(schema: dict[str, Any], value: Any) -> bool:
    """Proto3 JSON mapping: 64-bit integers travel as strings and may be numbers; 32-bit
    integers are numbers (a numeric string is accepted too); enums are their names."""
    kind = schema.get("type")
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        if schema.get("format") in ("int64", "uint64"):
            return _integral(value)
        if not isinstance(value, str):
            return False
        return "enum" not in schema or value in schema["enum"]
    if kind == "integer":
        return _integral(value)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.lstrip("-").isdigit()
