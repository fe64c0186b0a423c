"""Identifiers: their checks, UUIDv7 construction, and the trade_id stamped in an order comment.

Identifiers travel as strings on every wire (JSON lines to the EAs, the transport to Core) and stay plain
``str`` (``int`` for MT4 numbers) inside: a ``parse_*`` function checks one and returns it unchanged, or
raises ``InvalidId`` naming the kind and the value. The messages run these checks on construction.
The kinds: trade_id (UUIDv7 born at the master EA; the dedupe key of a trade on every hop), command_id
(UUIDv7 born at Core, one per command to one slave; retries reuse it), event_id (UUIDv7 of a master
close/modify event), trace_id (32 lowercase hex, W3C), account_id (the MetaTrader login as text),
agent_id, ticket (an MT4 order ticket, positive) and magic_number.
UUIDv7 values are built from explicit parts (``uuid7``) so that the domain never reads a clock or a
random source: callers pass both, which also keeps simulations deterministic.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid

# matched whole (``fullmatch``): ``re.match`` with ``$`` lets a trailing newline through
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_TRACE_RE = re.compile(r"[0-9a-f]{32}")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID7_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidId(ValueError):
    """An identifier failed validation; the message names the kind and the value."""


def uuid7(unix_ms: int, rand: bytes) -> str:
    """Build an RFC 9562 UUIDv7 string from a Unix time in ms and at least 10 random bytes."""
    if len(rand) < 10:
        raise InvalidId("uuid7 needs 10 random bytes")
    return uuid7_from_int(unix_ms, int.from_bytes(rand[:10], "big") >> 6)


def uuid7_from_int(unix_ms: int, rand74: int) -> str:
    """A UUIDv7 from a Unix time in ms and 74 random bits: 12 in rand_a, 62 in rand_b."""
    if unix_ms < 0 or unix_ms >= 1 << 48:
        raise InvalidId(f"uuid7 time out of range: {unix_ms}")
    rand_a = (rand74 >> 62) & 0xFFF
    rand_b = rand74 & ((1 << 62) - 1)
    h = f"{(unix_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time_ms(value: str) -> int:
    """The Unix time in ms embedded in a UUIDv7."""
    return uuid.UUID(value).int >> 80


def _parse_uuid7(kind: str, value: str) -> str:
    # every message checks its ids on construction: one match for the valid case, the reasons after it
    if type(value) is str and _UUID7_RE.fullmatch(value):
        return value
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise InvalidId(f"{kind} must be a lowercase UUID string, got {value!r}")
    if value[14] != "7":
        raise InvalidId(f"{kind} must be a UUIDv7, got version {value[14]} in {value!r}")
    return value


def parse_trade_id(value: str) -> str:
    return _parse_uuid7("trade_id", value)


def parse_command_id(value: str) -> str:
    return _parse_uuid7("command_id", value)


def parse_event_id(value: str) -> str:
    return _parse_uuid7("event_id", value)


def parse_trace_id(value: str) -> str:
    if not isinstance(value, str) or not _TRACE_RE.fullmatch(value):
        raise InvalidId(f"trace_id must be 32 lowercase hex characters, got {value!r}")
    if value == "0" * 32:
        raise InvalidId("trace_id must not be all zeros")
    return value


def parse_account_id(value: str) -> str:
    if not isinstance(value, str) or not _ACCOUNT_RE.fullmatch(value):
        raise InvalidId(f"account_id must be 1-64 characters of [A-Za-z0-9_.-], got {value!r}")
    return value


def parse_agent_id(value: str) -> str:
    if not isinstance(value, str) or not _ACCOUNT_RE.fullmatch(value):
        raise InvalidId(f"agent_id must be 1-64 characters of [A-Za-z0-9_.-], got {value!r}")
    return value


def parse_ticket(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 63:
        raise InvalidId(f"ticket must be a positive integer, got {value!r}")
    return value


def parse_magic(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise InvalidId(f"magic_number must be a non-negative integer, got {value!r}")
    return value


def trace_id_from(rand: bytes) -> str:
    """A trace id from 16 random bytes (never all zeros)."""
    if len(rand) < 16:
        raise InvalidId("trace id needs 16 random bytes")
    text = rand[:16].hex()
    return text if text != "0" * 32 else "0" * 31 + "1"


_COMMENT_PREFIX = "echo:"


def trade_comment(trade_id: str) -> str:
    """The order comment that stamps a trade_id on a slave order, within MT4's 31 characters.

    ``echo:`` + the 16 bytes of the UUID in unpadded base64url (22 characters) = 27 characters.
    """
    raw = uuid.UUID(trade_id).bytes
    return _COMMENT_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def trade_id_from_comment(comment: str) -> str | None:
    """The trade_id stamped by ``trade_comment``, or None. Tolerates text a broker appends (``[sl]``)."""
    if not comment.startswith(_COMMENT_PREFIX) or len(comment) < len(_COMMENT_PREFIX) + 22:
        return None
    token = comment[len(_COMMENT_PREFIX) : len(_COMMENT_PREFIX) + 22]
    try:
        raw = base64.urlsafe_b64decode(token + "==")
    except (ValueError, binascii.Error):
        return None
    if len(raw) != 16:
        return None
    return str(uuid.UUID(bytes=raw))
