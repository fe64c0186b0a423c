"""Sans-IO codec for the EA protocol: JSON lines, one ``{"type", "timestamp_ms", "payload"}`` object per line.

``LineDecoder.feed(bytes)`` returns decoded messages and precise failures; it never raises on bad input
and never buffers more than ``max_line_bytes`` (a longer line is reported once and skipped up to its
newline). ``encode`` turns a payload into one line. Validation is one msgspec pass into the domain's
dataclasses (their ``__post_init__`` checks run during the decode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Union

import msgspec

from echo.domain import messages as m
from echo.domain.errors import ProtocolError
from echo.pipe.jsonenc import to_json_bytes

MAX_LINE_BYTES: Final = 1 << 20
"""1 MiB: room for a handshake with a few thousand symbols."""
MAX_DEPTH: Final = 16
"""Arrays and objects nested deeper than this are refused before any decoder reads the line (the deepest
message of the protocol nests 4 levels; a decoder that recursed through thousands would exhaust the
stack)."""

# type name -> payload class. The table is the protocol's vocabulary; PROTOCOL.md documents each row.
PAYLOADS: Final[dict[str, type]] = {
    "handshake": m.Handshake,
    "trade_intent": m.TradeIntent,
    "trade_close": m.TradeClose,
    "trade_modify": m.TradeModify,
    "trade_intent_ack": m.TradeIntentAck,
    "execute_order": m.ExecuteOrder,
    "close_order": m.CloseOrder,
    "modify_order": m.ModifyOrder,
    "execution_result": m.ExecutionResult,
    "close_result": m.CloseResult,
    "modify_result": m.ModifyResult,
    "pipe_delivery_ack": m.PipeDeliveryAck,
    "symbol_registration_result": m.SymbolRegistrationResult,
    "delivery_config": m.DeliveryConfig,
    "quotes": m.Quotes,
    "state_snapshot": m.StateSnapshot,
    "heartbeat": m.Heartbeat,
    "error": m.ErrorReply,
}
TYPE_OF: Final[dict[type, str]] = {cls: name for name, cls in PAYLOADS.items()}

EA_TO_AGENT: Final = frozenset(
    {
        "handshake",
        "trade_intent",
        "trade_close",
        "trade_modify",
        "execution_result",
        "close_result",
        "modify_result",
        "pipe_delivery_ack",
        "quotes",
        "state_snapshot",
        "heartbeat",
        "error",
    }
)
AGENT_TO_EA: Final = frozenset(
    {
        "execute_order",
        "close_order",
        "modify_order",
        "trade_intent_ack",
        "symbol_registration_result",
        "delivery_config",
        "heartbeat",
        "error",
    }
)

_Timestamp = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
MAX_ERROR_MESSAGE: Final = 500
"""Error replies quote at most this many characters of the problem (a bad line may be huge)."""

_ENVELOPES: dict[str, type[msgspec.Struct]] = {
    name: msgspec.defstruct(
        f"Envelope_{name}",
        [("timestamp_ms", _Timestamp), ("payload", cls)],
        tag_field="type",
        tag=name,
        frozen=True,
    )
    for name, cls in PAYLOADS.items()
}
_ENVELOPE_NAME = {env: name for name, env in _ENVELOPES.items()}
_full_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(_ENVELOPES.values())])  # noqa: UP007


class _TypeOnly(msgspec.Struct):
    type: str | None = None


_type_decoder = msgspec.json.Decoder(_TypeOnly)


@dataclass(frozen=True, slots=True)
class Decoded:
    type: str
    timestamp_ms: int
    payload: Any


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    code: ProtocolError
    message: str
    ref_type: str | None = None

    def __post_init__(self) -> None:
        if len(self.message) > MAX_ERROR_MESSAGE:
            object.__setattr__(self, "message", self.message[: MAX_ERROR_MESSAGE - 3] + "...")

    def reply(self, timestamp_ms: int) -> bytes:
        """The ``error`` line that answers this failure."""
        return encode(m.ErrorReply(self.code.value, self.message, self.ref_type), timestamp_ms)


Event = Decoded | DecodeFailure


def encode(payload: object, timestamp_ms: int) -> bytes:
    """One protocol line (with its ``\\n``) for a payload object of the vocabulary."""
    name = TYPE_OF[type(payload)]
    return to_json_bytes(_ENVELOPES[name](timestamp_ms, payload)) + b"\n"


_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_WRONG = re.compile(r"^Expected `")


def _classify(exc: msgspec.ValidationError) -> ProtocolError:
    text = str(exc)
    if _MISSING.search(text):
        return ProtocolError.ERR_PROTOCOL_MISSING_FIELD
    if "at `$.type`" in text:
        return ProtocolError.ERR_PROTOCOL_UNKNOWN_TYPE
    if _WRONG.match(text):
        return ProtocolError.ERR_PROTOCOL_WRONG_TYPE
    return ProtocolError.ERR_PROTOCOL_INVALID_VALUE


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)
"""A JSON string, or an unterminated one up to the end of the line: one linear pass (possessive)."""
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` in ``line`` (brackets inside strings do not
    count). Linear in the line; nearly free for a line with few brackets."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for c in _STRINGS.sub(b"", line).translate(None, _NOT_BRACKETS):
        if c == 0x5B or c == 0x7B:  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def decode_line(line: bytes, accept: frozenset[str]) -> Event:
    """Decode one line (without its newline). ``accept`` is the set of types this side may receive."""
    try:
        line.decode("utf-8")  # the whole line, including fields no decoder looks at
    except UnicodeDecodeError as exc:
        return DecodeFailure(
            ProtocolError.ERR_PROTOCOL_INVALID_UTF8,
            f"line is not valid UTF-8 at byte {exc.start}: {exc.reason}",
        )
    if too_deep(line):
        return DecodeFailure(
            ProtocolError.ERR_PROTOCOL_TOO_DEEP, f"arrays/objects nested deeper than {MAX_DEPTH} levels"
        )
    try:
        env = _full_decoder.decode(line)
    except RecursionError:  # the depth check makes this unreachable; kept so no line can end the reader
        return DecodeFailure(ProtocolError.ERR_PROTOCOL_TOO_DEEP, "nested too deep for the decoder")
    except msgspec.ValidationError as exc:
        ref = _ref_type(line)
        if ref is None and "at `$.type`" in str(exc):
            return DecodeFailure(ProtocolError.ERR_PROTOCOL_WRONG_TYPE, "`type` must be a string")
        code = _classify(exc)
        if code is ProtocolError.ERR_PROTOCOL_UNKNOWN_TYPE:
            return DecodeFailure(code, f"unknown message type {ref!r}", ref)
        if ref is None and "`type`" in str(exc):
            return DecodeFailure(ProtocolError.ERR_PROTOCOL_MISSING_FIELD, "message has no `type` field")
        return DecodeFailure(code, f"{ref or 'message'}: {exc}", ref)
    except msgspec.DecodeError as exc:
        if "UTF-8" in str(exc) or "utf-8" in str(exc):
            return DecodeFailure(ProtocolError.ERR_PROTOCOL_INVALID_UTF8, f"line is not valid UTF-8: {exc}")
        return DecodeFailure(ProtocolError.ERR_PROTOCOL_MALFORMED_JSON, str(exc))
    name = _ENVELOPE_NAME[type(env)]
    if name not in accept:
        return DecodeFailure(
            ProtocolError.ERR_PROTOCOL_UNEXPECTED_MESSAGE,
            f"message type {name!r} is not accepted in this direction",
            name,
        )
    return Decoded(name, env.timestamp_ms, env.payload)


def _ref_type(line: bytes) -> str | None:
    try:
        t = _type_decoder.decode(line).type
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    return t[:64] if isinstance(t, str) else None


class LineDecoder:
    """Incremental decoder for one connection's byte stream."""

    def __init__(self, accept: frozenset[str], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._accept = accept
        self._max = max_line_bytes
        self._buf = bytearray()
        self._scan = 0
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n", self._scan)
            if nl < 0:
                if len(self._buf) > self._max:
                    if not self._discarding:
                        events.append(self._too_long())
                        self._discarding = True
                    self._buf.clear()
                self._scan = len(self._buf)
                return events
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan = 0
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self._max:
                events.append(self._too_long())
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip():
                continue
            events.append(decode_line(line, self._accept))

    def _too_long(self) -> DecodeFailure:
        return DecodeFailure(
            ProtocolError.ERR_PROTOCOL_LINE_TOO_LONG,
            f"line exceeds {self._max} bytes; skipped up to its newline",
        )
