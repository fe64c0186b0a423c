"""What a peer's protobuf bytes may be, checked in one linear pass before the parser reads them: at most
``MAX_MESSAGE_BYTES``, no groups, at most ``MAX_UNKNOWN_FIELDS`` unknown fields, lengths in bounds and
nesting at most 16 deep, read from the generated descriptors."""

from __future__ import annotations

from typing import Any

# --- what a peer's bytes may be -------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 4 << 20
"""A stream message larger than this is refused unread (the largest real one, a handshake with a few
thousand symbols, is well under 1 MiB)."""
MAX_UNKNOWN_FIELDS = 64
"""Fields this side does not know, in one message at every depth: a newer peer adds a few; thousands
are no peer's and are refused before they cost the parser anything."""
_MAX_WIRE_DEPTH = 16


class _WireError(ValueError):
    pass


Descriptor = Any  # google.protobuf.descriptor.Descriptor (protobuf ships no type information for it)

_SCHEMAS: dict[str, dict[int, Descriptor | None]] = {}
"""message full name -> {field number: the nested message's descriptor, or None for a scalar}."""


def _schema(descriptor: Descriptor) -> dict[int, Descriptor | None]:
    schema = _SCHEMAS.get(descriptor.full_name)
    if schema is None:
        schema = _SCHEMAS[descriptor.full_name] = {f.number: f.message_type for f in descriptor.fields}
    return schema


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise _WireError("a truncated or overlong varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def wire_problem(data: bytes, message_type: Any) -> str | None:
    """Why a peer's bytes must not reach the protobuf parser, or None. One linear walk over the wire
    format against the message's schema: a size limit, proto3 wire types only (no groups), lengths inside
    the message, a bounded nesting depth and at most ``MAX_UNKNOWN_FIELDS`` unknown fields."""
    if len(data) > MAX_MESSAGE_BYTES:
        return f"a message of {len(data)} bytes (at most {MAX_MESSAGE_BYTES})"
    unknown = [0]
    try:
        _walk(memoryview(data), message_type.DESCRIPTOR, unknown, 0)
    except _WireError as exc:
        return str(exc)
    return None


def _walk(data: memoryview, descriptor: Descriptor | None, unknown: list[int], depth: int) -> None:
    if depth > _MAX_WIRE_DEPTH:
        raise _WireError(f"messages nested deeper than {_MAX_WIRE_DEPTH}")
    schema = _schema(descriptor) if descriptor is not None else {}
    i, end = 0, len(data)
    while i < end:
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _WireError("field number 0")
        known = number in schema
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > end:
                raise _WireError("a length beyond the end of its message")
            nested = schema.get(number)
            if nested is not None:  # a message, a map entry or one of a repeated message
                _walk(data[i : i + length], nested, unknown, depth + 1)
            i += length
        else:
            raise _WireError(f"wire type {wire} (groups and reserved types are not proto3)")
        if i > end:
            raise _WireError("a field beyond the end of its message")
        if not known:
            unknown[0] += 1
            if unknown[0] > MAX_UNKNOWN_FIELDS:
                raise _WireError(f"more than {MAX_UNKNOWN_FIELDS} unknown fields")
