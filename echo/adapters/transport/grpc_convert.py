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
