"""The checks every message runs on construction: 64-bit finite numbers, ids, symbols, prices."""

from __future__ import annotations

import math
from dataclasses import fields
from functools import lru_cache

from echo.domain.ids import parse_trace_id, parse_trade_id

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_NUMERIC_FIELDS: dict[type, tuple[str, ...]] = {}


def _numeric_fields(cls: type) -> tuple[str, ...]:
    names = _NUMERIC_FIELDS.get(cls)
    if names is None:
        # annotations are strings here (postponed evaluation): pick the scalar int/float fields
        names = tuple(
            f.name
            for f in fields(cls)
            if isinstance(f.type, str) and f.type.split(" ")[0] in ("int", "float") and "list" not in f.type
        )
        _NUMERIC_FIELDS[cls] = names
    return names


def check_numbers(obj: object) -> None:
    """Every float finite, every int within 64 bits: what the store and every peer can represent."""
    for name in _numeric_fields(type(obj)):
        v = getattr(obj, name)
        if v is None:
            continue
        if type(v) is float:
            if not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v}")
        elif not _INT64_MIN <= v <= _INT64_MAX:
            raise ValueError(f"{name} is outside the 64-bit integer range")


def check_attempt(v: int) -> None:
    if v < 1:
        raise ValueError(f"attempt must be >= 1, got {v}")


def check_positive(kind: str, v: float) -> None:
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{kind} must be a finite number > 0, got {v}")


def check_price(kind: str, v: float | None) -> None:
    if v is not None and (not math.isfinite(v) or v < 0):
        raise ValueError(f"{kind} must be a finite price >= 0 or null, got {v}")


def check_symbol(v: str) -> None:
    if not v or len(v) > 32 or not v.isprintable():
        raise ValueError(f"symbol must be 1-32 printable characters, got {v!r}")


def check_trade_ids(trade_id: str, trace_id: str) -> None:
    """A trade's ids. Every command, result and ack of a trade carries the same two, so a valid pair is
    remembered while it is recent (an invalid one raises, and is not)."""
    if type(trade_id) is str and type(trace_id) is str:
        _check_pair(trade_id, trace_id)
    else:
        parse_trade_id(trade_id)
        parse_trace_id(trace_id)


@lru_cache(maxsize=4096)
def _check_pair(trade_id: str, trace_id: str) -> None:
    parse_trade_id(trade_id)
    parse_trace_id(trace_id)
