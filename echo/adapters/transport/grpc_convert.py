"""Domain messages <-> the split-mode protobuf contracts (``protos/echo/v1``, generated in ``pb``).

The EA messages have the same field names on both sides, so they convert field by field, driven by the
domain dataclasses' type hints: enums by member name (``ERR_INVALID_PRICE`` <-> ``INVALID_PRICE``), nested
dataclasses to the message of the same name, lists, maps and optional values (a protobuf ``optional``
keeps "unset" apart from zero). The transport envelopes (AccountOnline, FromAccount, ToAccount, ...) are
mapped by hand: they are where the two shapes differ."""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from echo.adapters.transport.pb.echo import v1 as pb
from echo.domain import messages as m
from echo.domain.errors import ErrorCode
from echo.domain.types import Role, Side, SymbolSpec

_ENUMS: dict[type[enum.Enum], type[enum.Enum]] = {
    Side: pb.OrderSide,
    Role: pb.Role,
    ErrorCode: pb.ErrorCode,
    m.AckStatus: pb.AckStatus,
    m.CloseReason: pb.CloseReason,
    m.RegistrationStatus: pb.RegistrationStatus,
    m.AckStage: pb.AckStage,
    m.AckResult: pb.AckResult,
}
_PB_TO_DOMAIN_ENUM = {v: k for k, v in _ENUMS.items()}

FROM_EA: dict[type[Any], str] = {
    m.TradeIntent: "trade_intent",
    m.TradeClose: "trade_close",
    m.TradeModify: "trade_modify",
    m.ExecutionResult: "execution_result",
    m.CloseResult: "close_result",
    m.ModifyResult: "modify_result",
    m.Quotes: "quotes",
    m.StateSnapshot: "state_snapshot",
}
TO_EA: dict[type[Any], str] = {
    m.ExecuteOrder: "execute_order",
    m.CloseOrder: "close_order",
    m.ModifyOrder: "modify_order",
    m.TradeIntentAck: "trade_intent_ack",
    m.SymbolRegistrationResult: "symbol_registration_result",
    m.DeliveryConfig: "delivery_config",
}


P = ParamSpec("P")
R = TypeVar("R")


class ConvertError(ValueError):
    """A protobuf message that does not make a valid domain message."""


def _member_name(member: enum.Enum) -> str:
    name = member.name
    return name[4:] if isinstance(member, ErrorCode) and name.startswith("ERR_") else name


def _domain_member(cls: type[enum.Enum], pb_member: enum.Enum) -> enum.Enum:
    name = pb_member.name
    if cls is ErrorCode and name != "NO_ERROR":
        name = "ERR_" + name
    try:
        return cls[name]
    except KeyError:
        raise ConvertError(f"{cls.__name__} has no member {name}") from None


# --- what a peer's bytes may be -------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 4 << 20
"""A stream message larger than this is refused unread (the largest real one, a handshake with a few
thousand symbols, is well under 1 MiB)."""
MAX_UNKNOWN_FIELDS = 64
"""Fields this side does not know, in one message at every depth: a newer peer adds a few; thousands would
cost the pure-Python parser quadratic time."""
_MAX_WIRE_DEPTH = 16


class _WireError(ValueError):
    pass


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


def wire_problem(data: bytes, message_type: type[Any]) -> str | None:
    """Why a peer's bytes must not reach the protobuf parser, or None. One linear walk over the wire
    format against the message's schema: a size limit, proto3 wire types only (no groups), lengths inside
    the message, a bounded nesting depth and at most ``MAX_UNKNOWN_FIELDS`` unknown fields (the parser
    keeps those by concatenating bytes, quadratic in their number)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return f"a message of {len(data)} bytes (at most {MAX_MESSAGE_BYTES})"
    unknown = [0]
    try:
        _walk(memoryview(data), message_type, unknown, 0)
    except _WireError as exc:
        return str(exc)
    return None


def _walk(data: memoryview, cls: type[Any], unknown: list[int], depth: int) -> None:
    if depth > _MAX_WIRE_DEPTH:
        raise _WireError(f"messages nested deeper than {_MAX_WIRE_DEPTH}")
    meta: Any = getattr(cls, "_betterproto", None)
    i, end = 0, len(data)
    while i < end:
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _WireError("field number 0")
        name = meta.field_name_by_number.get(number) if meta is not None else None
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
            if name is not None and meta.meta_by_field_name[name].proto_type in ("message", "map"):
                _walk(data[i : i + length], meta.cls_by_field[name], unknown, depth + 1)
            i += length
        else:
            raise _WireError(f"wire type {wire} (groups and reserved types are not proto3)")
        if i > end:
            raise _WireError("a field beyond the end of its message")
        if name is None:
            unknown[0] += 1
            if unknown[0] > MAX_UNKNOWN_FIELDS:
                raise _WireError(f"more than {MAX_UNKNOWN_FIELDS} unknown fields")


# --- domain -> protobuf ---------------------------------------------------------------------------------


_PB_SHAPES: dict[type[Any], tuple[Any, tuple[str, ...]]] = {}
"""domain dataclass -> (its protobuf class, its field names): looked up once per type."""


def _pb_shape(cls: type[Any]) -> tuple[Any, tuple[str, ...]]:
    shape = _PB_SHAPES.get(cls)
    if shape is None:
        shape = _PB_SHAPES[cls] = (getattr(pb, cls.__name__), tuple(f.name for f in dataclasses.fields(cls)))
    return shape


def to_pb_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _ENUMS[type(value)][_member_name(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        pb_cls, names = _pb_shape(type(value))
        return pb_cls(**{name: to_pb_value(getattr(value, name)) for name in names})
    if isinstance(value, list):
        return [to_pb_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_pb_value(v) for k, v in value.items()}
    return value


# --- protobuf -> domain ---------------------------------------------------------------------------------

Decoder = Callable[[Any], Any]
_DECODERS: dict[Any, Decoder] = {}
_PLANS: dict[type[Any], tuple[tuple[str, Decoder], ...]] = {}


def _same(value: Any) -> Any:
    return value


def _decoder(hint: Any) -> Decoder:
    """How a protobuf value becomes the domain value a type hint asks for, worked out once per hint."""
    found = _DECODERS.get(hint)
    if found is not None:
        return found
    origin = typing.get_origin(hint)
    decode: Decoder
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        inner_decode = _decoder(inner)

        def decode(value: Any) -> Any:
            return None if value is None else inner_decode(value)

    elif origin is list:
        (item,) = typing.get_args(hint)
        item_decode = _decoder(item)

        def decode(value: Any) -> Any:
            return [item_decode(v) for v in value]

    elif origin is dict:
        decode = dict
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        enum_cls = hint

        def decode(value: Any) -> Any:
            return _domain_member(enum_cls, value)

    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        message_cls = hint

        def decode(value: Any) -> Any:
            return from_pb_message(value, message_cls)

    else:
        decode = _same
    _DECODERS[hint] = decode
    return decode


def _plan(cls: type[Any]) -> tuple[tuple[str, Decoder], ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        plan = _PLANS[cls] = tuple(
            (f.name, _decoder(hints[f.name])) for f in dataclasses.fields(cls) if f.init
        )
    return plan


def from_pb_message(msg: Any, cls: type[Any]) -> Any:
    kwargs = {name: decode(getattr(msg, name)) for name, decode in _plan(cls)}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # the domain's validation: a bad value from the peer
        raise ConvertError(f"{cls.__name__}: {exc}") from exc


# --- envelopes ----------------------------------------------------------------------------------------------


def agent_message(msg: m.AgentToCore) -> pb.AgentMessage:
    if isinstance(msg, m.FromAccount):
        field = FROM_EA[type(msg.message)]
        return pb.AgentMessage(
            from_account=pb.FromAccount(
                account_id=msg.account_id, received_ms=msg.received_ms, **{field: to_pb_value(msg.message)}
            )
        )
    if isinstance(msg, m.CommandAck):
        return pb.AgentMessage(command_ack=to_pb_value(msg))
    if isinstance(msg, m.AccountOffline):
        return pb.AgentMessage(account_offline=pb.AccountOffline(account_id=msg.account_id, at_ms=msg.at_ms))
    hs = msg.handshake
    return pb.AgentMessage(
        account_online=pb.AccountSymbolsReport(
            account_id=hs.account_id,
            role=to_pb_value(hs.role),
            symbols=[to_pb_value(s) for s in hs.symbols],
            metadata=pb.HandshakeMetadata(
                protocol_version=hs.protocol_version,
                client_semver=hs.client_semver,
                client_id=hs.client_id,
                broker=hs.broker,
                terminal_build=hs.terminal_build,
                capabilities=to_pb_value(hs.capabilities),
            ),
            symbol_mappings=dict(hs.symbol_mappings),
            reported_at_ms=msg.at_ms,
        )
    )


def _shape_errors(convert: Callable[P, R]) -> Callable[P, R]:
    """A peer's bytes can decode into a message of the wrong shape (betterproto2 keeps a scalar where a
    message field was expected): whatever that breaks is a ConvertError, like any other bad message."""

    @functools.wraps(convert)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return convert(*args, **kwargs)
        except ConvertError:
            raise
        except (AttributeError, TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ConvertError(f"malformed message: {type(exc).__name__}: {exc}") from exc

    return checked


@_shape_errors
def agent_message_from_pb(msg: pb.AgentMessage, agent_id: str) -> m.AgentToCore:
    """The domain message an Agent's protobuf message stands for (``agent_id``: the stream's Agent)."""
    if msg.from_account is not None:
        fa = msg.from_account
        for cls, field in FROM_EA.items():
            inner = getattr(fa, field)
            if inner is not None:
                return m.FromAccount(fa.account_id, from_pb_message(inner, cls), fa.received_ms)
        raise ConvertError("from_account carries no message")
    if msg.command_ack is not None:
        return typing.cast(m.CommandAck, from_pb_message(msg.command_ack, m.CommandAck))
    if msg.account_offline is not None:
        return m.AccountOffline(agent_id, msg.account_offline.account_id, msg.account_offline.at_ms)
    report = msg.account_online
    if report is None:
        raise ConvertError("an AgentMessage with no payload the stream expects here")
    meta = report.metadata or pb.HandshakeMetadata()
    try:
        hs = m.Handshake(
            account_id=report.account_id,
            role=typing.cast(Role, _domain_member(Role, report.role)),
            protocol_version=meta.protocol_version,
            client_semver=meta.client_semver,
            client_id=meta.client_id,
            broker=meta.broker,
            terminal_build=meta.terminal_build,
            capabilities=typing.cast(
                m.Capabilities, from_pb_message(meta.capabilities or pb.Capabilities(), m.Capabilities)
            ),
            symbols=[typing.cast(SymbolSpec, from_pb_message(s, SymbolSpec)) for s in report.symbols],
            symbol_mappings=dict(report.symbol_mappings),
        )
    except (ValueError, TypeError) as exc:
        raise ConvertError(f"Handshake: {exc}") from exc
    return m.AccountOnline(agent_id, hs, report.reported_at_ms)


def core_message(msg: m.CoreToAgent, sent_at_ms: int = 0) -> pb.CoreMessage:
    if isinstance(msg, m.ToAccount):
        field = TO_EA[type(msg.message)]
        return pb.CoreMessage(
            to_account=pb.ToAccount(account_id=msg.account_id, **{field: to_pb_value(msg.message)})
        )
    if isinstance(msg, m.DropCommand):
        return pb.CoreMessage(drop_command=to_pb_value(msg))
    return pb.CoreMessage(
        delivery_heartbeat=pb.DeliveryHeartbeat(config=to_pb_value(msg.config), sent_at_ms=sent_at_ms)
    )


@_shape_errors
def core_message_from_pb(msg: pb.CoreMessage) -> m.CoreToAgent:
    if msg.to_account is not None:
        ta = msg.to_account
        for cls, field in TO_EA.items():
            inner = getattr(ta, field)
            if inner is not None:
                return m.ToAccount(ta.account_id, from_pb_message(inner, cls))
        raise ConvertError("to_account carries no message")
    if msg.drop_command is not None:
        return typing.cast(m.DropCommand, from_pb_message(msg.drop_command, m.DropCommand))
    if msg.delivery_heartbeat is not None and msg.delivery_heartbeat.config is not None:
        config = from_pb_message(msg.delivery_heartbeat.config, m.DeliveryConfig)
        return m.DeliveryHeartbeat(typing.cast(m.DeliveryConfig, config))
    raise ConvertError("a CoreMessage with no payload the stream expects here")
