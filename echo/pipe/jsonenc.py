"""Compact JSON for the store and the logs: one msgspec encoder (dataclasses, Structs, enums)."""

from __future__ import annotations

import msgspec

_encoder = msgspec.json.Encoder()


def to_json_bytes(obj: object) -> bytes:
    """``obj`` as compact JSON bytes."""
    return _encoder.encode(obj)


def to_json(obj: object, **_: object) -> str:
    """``obj`` as compact JSON text (extra keyword arguments are ignored, so it can serve as a ``dumps``)."""
    return _encoder.encode(obj).decode()
