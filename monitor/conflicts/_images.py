"""Canonical, hashable forms of DynamoDB-JSON images and keys.

The detector compares versions of an item seen in different regions' streams.
Each region serialises the same item independently, so two images are only
comparable after canonicalisation: attribute order must not matter, numbers
must compare by value (DynamoDB's number type is decimal: "3" and "3.0" are the
same number), and sets are unordered. The canonical form is a nested tuple so it
can be a dict key and a set member, which is what the history rebuild needs.
"""

from __future__ import annotations

import base64
from collections.abc import Hashable, Mapping
from decimal import Decimal, InvalidOperation
from sys import intern
from typing import Any

#: A canonical attribute value: ``(type tag, payload)``, payload hashable.
Value = tuple[str, Hashable]
#: A canonical image or key: attributes sorted by name.
Image = tuple[tuple[str, Value], ...]


class ImageError(ValueError):
    """A DynamoDB-JSON value could not be understood (unknown type tag, bad number)."""


def _number(text: Any) -> str:
    try:
        value = Decimal(str(text))
    except InvalidOperation as exc:
        raise ImageError(f"not a DynamoDB number: {text!r}") from exc
    if value.is_zero():
        return "0"
    # normalize() turns 3.0 into 3 and 300 into 3E+2; "f" formatting removes the
    # exponent again, so equal numbers always produce equal strings.
    return format(value.normalize(), "f")


def _binary(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):  # base64 text, as in JSON event payloads: compare as is
        return value.encode()
    raise ImageError(f"not a DynamoDB binary: {value!r}")


def canonical_value(av: Mapping[str, Any]) -> Value:
    """Canonicalise one DynamoDB-JSON attribute value such as ``{"N": "3"}``."""
    if len(av) != 1:
        raise ImageError(f"attribute value must have exactly one type tag: {av!r}")
    ((tag, raw),) = av.items()
    if tag == "S":
        return ("S", str(raw))
    if tag == "N":
        return ("N", _number(raw))
    if tag == "B":
        return ("B", _binary(raw))
    if tag == "BOOL":
        return ("BOOL", bool(raw))
    if tag == "NULL":
        return ("NULL", True)
    if tag == "SS":
        return ("SS", frozenset(str(x) for x in raw))
    if tag == "NS":
        return ("NS", frozenset(_number(x) for x in raw))
    if tag == "BS":
        return ("BS", frozenset(_binary(x) for x in raw))
    if tag == "L":
        return ("L", tuple(canonical_value(x) for x in raw))
    if tag == "M":
        return ("M", canonical_image(raw))
    raise ImageError(f"unknown DynamoDB type tag {tag!r}")


def canonical_image(image: Mapping[str, Mapping[str, Any]]) -> Image:
    """Turn a DynamoDB-JSON image (or key) dict into its canonical hashable form.

    >>> canonical_image({"OrderID": {"S": "1"}, "N": {"N": "3.0"}})
    (('N', ('N', '3')), ('OrderID', ('S', '1')))
    """
    return tuple(sorted((intern(str(name)), canonical_value(av)) for name, av in image.items()))


def canonical_key(keys: Mapping[str, Mapping[str, Any]]) -> Image:
    """Canonical item key; the same form as an image, kept separate for readability."""
    return canonical_image(keys)


def attribute(image: Image | None, name: str) -> Value | None:
    """The canonical value of attribute ``name`` in ``image``, or None."""
    if image is None:
        return None
    for attr, value in image:
        if attr == name:
            return value
    return None


def number_attribute(image: Image | None, name: str) -> int | None:
    """An integer-valued number attribute (the optimistic-locking version), or None."""
    value = attribute(image, name)
    if value is None or value[0] != "N":
        return None
    try:
        number = Decimal(str(value[1]))
    except InvalidOperation:
        return None
    if number != number.to_integral():
        return None
    return int(number)


def string_attribute(image: Image | None, name: str) -> str | None:
    """A string (or number, as text) attribute, used for the writer attribute."""
    value = attribute(image, name)
    if value is None or value[0] not in ("S", "N"):
        return None
    return str(value[1])


def _render_value(value: Value) -> str:
    tag, payload = value
    if tag == "M" and isinstance(payload, tuple):
        return format_image(payload)
    if tag == "L" and isinstance(payload, tuple):
        return "[" + ", ".join(_render_value(v) for v in payload) + "]"
    if isinstance(payload, frozenset):
        return "{" + ", ".join(sorted(repr(x) for x in payload)) + "}"
    if tag == "S":
        return repr(payload)
    return str(payload)


def format_image(image: Image | None, limit: int = 200) -> str:
    """Short human-readable rendering for verdict evidence and logs."""
    if image is None:
        return "<deleted>"
    text = "{" + ", ".join(f"{name}={_render_value(v)}" for name, v in image) + "}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def image_to_json(image: Image | None) -> dict[str, Any] | None:
    """DynamoDB-JSON that `json.dumps` takes (binary as base64 text): logs, the API, checkpoints."""
    return None if image is None else _jsonable(image_to_dynamodb_json(image))


def image_from_json(data: Mapping[str, Any]) -> Image:
    """The canonical image `image_to_json` wrote (binary values decoded from base64 again)."""
    return canonical_image({name: _unjsonable(av) for name, av in data.items()})


def _unjsonable(av: Mapping[str, Any]) -> dict[str, Any]:
    ((tag, raw),) = av.items()
    if tag == "B":
        return {tag: base64.b64decode(raw)}
    if tag == "BS":
        return {tag: [base64.b64decode(x) for x in raw]}
    if tag == "M":
        return {tag: {k: _unjsonable(v) for k, v in raw.items()}}
    if tag == "L":
        return {tag: [_unjsonable(v) for v in raw]}
    return {tag: raw}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def image_to_dynamodb_json(image: Image) -> dict[str, Any]:
    """Back to DynamoDB-JSON (for logs and the API); sets come back sorted."""
    return {name: _value_to_json(v) for name, v in image}


def _value_to_json(value: Value) -> dict[str, Any]:
    tag, payload = value
    if tag == "M" and isinstance(payload, tuple):
        return {"M": image_to_dynamodb_json(payload)}
    if tag == "L" and isinstance(payload, tuple):
        return {"L": [_value_to_json(v) for v in payload]}
    if isinstance(payload, frozenset):
        return {tag: sorted(payload)}
    return {tag: payload}
