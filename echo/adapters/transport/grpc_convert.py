"""Domain messages <-> the split-mode protobuf contracts (``protos/echo/v1``, generated in ``pb`` by
``make proto``: protobuf's classes, run by its upb C backend).

Every message is converted by hand, field by field: a domain message becomes a protobuf one through one
constructor call, and back through plain attribute reads. Enums map by member name
(``ErrorCode.ERR_INVALID_PRICE`` <-> ``ERROR_CODE_INVALID_PRICE``), in tables built once at import. A
protobuf ``optional`` keeps "unset" apart from zero: ``None`` on the domain side. What a peer sends is
checked by ``wire_problem`` (``grpc_wire``) before the parser reads it, then by the domain messages' own
validation: a message that fails either is a ``ConvertError``. This module holds the envelopes
(AgentMessage, CoreMessage, FromAccount, ToAccount); each message's converters are in ``grpc_fields``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from echo.adapters.transport.grpc_fields import (  # each message's converters, used by the envelopes
    _ROLE,
    _ROLE_BACK,
    _close_order,
    _close_order_pb,
    _close_result,
    _close_result_pb,
    _command_ack,
    _command_ack_pb,
    _delivery_config,
    _delivery_config_pb,
    _execute_order,
    _execute_order_pb,
    _execution_result,
    _execution_result_pb,
    _member,
    _modify_order,
    _modify_order_pb,
    _modify_result,
    _modify_result_pb,
    _quotes,
    _quotes_pb,
    _registration_result,
    _registration_result_pb,
    _state_snapshot,
    _state_snapshot_pb,
    _symbol_spec,
    _symbol_spec_pb,
    _trade_close,
    _trade_close_pb,
    _trade_intent,
    _trade_intent_ack,
    _trade_intent_ack_pb,
    _trade_intent_pb,
    _trade_modify,
    _trade_modify_pb,
)
from echo.adapters.transport.grpc_fields import (
    ConvertError as ConvertError,
)
from echo.adapters.transport.grpc_wire import wire_problem as wire_problem
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as apb
from echo.domain import messages as m

# --- envelopes ----------------------------------------------------------------------------------------------

_FROM_EA_PB: dict[type[Any], tuple[str, Callable[[Any], Any]]] = {
    m.TradeIntent: ("trade_intent", _trade_intent_pb),
    m.TradeClose: ("trade_close", _trade_close_pb),
    m.TradeModify: ("trade_modify", _trade_modify_pb),
    m.ExecutionResult: ("execution_result", _execution_result_pb),
    m.CloseResult: ("close_result", _close_result_pb),
    m.ModifyResult: ("modify_result", _modify_result_pb),
    m.Quotes: ("quotes", _quotes_pb),
    m.StateSnapshot: ("state_snapshot", _state_snapshot_pb),
}
"""The EA messages an Agent forwards, by domain type: FromAccount's field for it and its encoder."""

_FROM_EA: dict[str, Callable[[apb.FromAccount], m.FromEA]] = {
    "trade_intent": lambda f: _trade_intent(f.trade_intent),
    "trade_close": lambda f: _trade_close(f.trade_close),
    "trade_modify": lambda f: _trade_modify(f.trade_modify),
    "execution_result": lambda f: _execution_result(f.execution_result),
    "close_result": lambda f: _close_result(f.close_result),
    "modify_result": lambda f: _modify_result(f.modify_result),
    "quotes": lambda f: _quotes(f.quotes),
    "state_snapshot": lambda f: _state_snapshot(f.state_snapshot),
}

_TO_EA_PB: dict[type[Any], tuple[str, Callable[[Any], Any]]] = {
    m.ExecuteOrder: ("execute_order", _execute_order_pb),
    m.CloseOrder: ("close_order", _close_order_pb),
    m.ModifyOrder: ("modify_order", _modify_order_pb),
    m.TradeIntentAck: ("trade_intent_ack", _trade_intent_ack_pb),
    m.SymbolRegistrationResult: ("symbol_registration_result", _registration_result_pb),
    m.DeliveryConfig: ("delivery_config", _delivery_config_pb),
}
"""The messages Core sends terminals, by domain type: ToAccount's field for it and its encoder."""

_TO_EA: dict[str, Callable[[apb.ToAccount], m.ToEA]] = {
    "execute_order": lambda t: _execute_order(t.execute_order),
    "close_order": lambda t: _close_order(t.close_order),
    "modify_order": lambda t: _modify_order(t.modify_order),
    "trade_intent_ack": lambda t: _trade_intent_ack(t.trade_intent_ack),
    "symbol_registration_result": lambda t: _registration_result(t.symbol_registration_result),
    "delivery_config": lambda t: _delivery_config(t.delivery_config),
}

FROM_EA: dict[type[Any], str] = {cls: field for cls, (field, _) in _FROM_EA_PB.items()}
"""The EA message types an Agent forwards to Core, and FromAccount's field for each."""
TO_EA: dict[type[Any], str] = {cls: field for cls, (field, _) in _TO_EA_PB.items()}
"""The message types Core sends to terminals through an Agent, and ToAccount's field for each."""


_TRACEPARENT_MAX = 55
"""A W3C traceparent (version 00) is 55 characters; anything longer from a peer is dropped, not kept."""


def _traceparent(value: str) -> str:
    return value if len(value) <= _TRACEPARENT_MAX else ""


def agent_message(msg: m.AgentToCore) -> apb.AgentMessage:
    if isinstance(msg, m.FromAccount):
        field, encode = _FROM_EA_PB[type(msg.message)]
        return apb.AgentMessage(
            from_account=apb.FromAccount(
                account_id=msg.account_id,
                received_ms=msg.received_ms,
                traceparent=msg.traceparent,
                **{field: encode(msg.message)},
            )
        )
    if isinstance(msg, m.CommandAck):
        return apb.AgentMessage(command_ack=_command_ack_pb(msg))
    if isinstance(msg, m.AccountOffline):
        return apb.AgentMessage(
            account_offline=apb.AccountOffline(account_id=msg.account_id, at_ms=msg.at_ms)
        )
    hs = msg.handshake
    return apb.AgentMessage(
        account_online=apb.AccountSymbolsReport(
            account_id=hs.account_id,
            role=_ROLE[hs.role],
            symbols=[_symbol_spec_pb(s) for s in hs.symbols],
            metadata=apb.HandshakeMetadata(
                protocol_version=hs.protocol_version,
                client_semver=hs.client_semver,
                client_id=hs.client_id,
                broker=hs.broker,
                terminal_build=hs.terminal_build,
                capabilities=apb.Capabilities(
                    features=hs.capabilities.features, metrics=hs.capabilities.metrics
                ),
            ),
            symbol_mappings=hs.symbol_mappings,
            reported_at_ms=msg.at_ms,
        )
    )


def _handshake(report: apb.AccountSymbolsReport) -> m.Handshake:
    meta = report.metadata
    return m.Handshake(
        account_id=report.account_id,
        role=_member(_ROLE_BACK, report.role, "role"),
        protocol_version=meta.protocol_version,
        client_semver=meta.client_semver,
        client_id=meta.client_id,
        broker=meta.broker,
        terminal_build=meta.terminal_build if meta.HasField("terminal_build") else None,
        capabilities=m.Capabilities(list(meta.capabilities.features), list(meta.capabilities.metrics)),
        symbols=[_symbol_spec(s) for s in report.symbols],
        symbol_mappings=dict(report.symbol_mappings),
    )


def agent_message_from_pb(msg: apb.AgentMessage, agent_id: str) -> m.AgentToCore:
    """The domain message an Agent's protobuf message stands for (``agent_id``: the stream's Agent)."""
    payload = msg.WhichOneof("payload")
    try:
        if payload == "from_account":
            fa = msg.from_account
            which = fa.WhichOneof("message")
            if which is None:
                raise ConvertError("from_account carries no message")
            return m.FromAccount(
                fa.account_id, _FROM_EA[which](fa), fa.received_ms, _traceparent(fa.traceparent)
            )
        if payload == "command_ack":
            return _command_ack(msg.command_ack)
        if payload == "account_offline":
            return m.AccountOffline(agent_id, msg.account_offline.account_id, msg.account_offline.at_ms)
        if payload == "account_online":
            return m.AccountOnline(
                agent_id, _handshake(msg.account_online), msg.account_online.reported_at_ms
            )
    except ConvertError:
        raise
    except (ValueError, TypeError) as exc:  # the domain's validation: a bad value from the peer
        raise ConvertError(f"{payload}: {exc}") from exc
    raise ConvertError("an AgentMessage with no payload the stream expects here")


def core_message(msg: m.CoreToAgent) -> apb.CoreMessage:
    if isinstance(msg, m.ToAccount):
        field, encode = _TO_EA_PB[type(msg.message)]
        return apb.CoreMessage(
            to_account=apb.ToAccount(
                account_id=msg.account_id, traceparent=msg.traceparent, **{field: encode(msg.message)}
            )
        )
    if isinstance(msg, m.DropCommand):
        return apb.CoreMessage(
            drop_command=apb.DropCommand(
                account_id=msg.account_id, command_id=msg.command_id, reason=msg.reason
            )
        )
    return apb.CoreMessage(delivery_heartbeat=apb.DeliveryHeartbeat(config=_delivery_config_pb(msg.config)))


def core_message_from_pb(msg: apb.CoreMessage) -> m.CoreToAgent:
    payload = msg.WhichOneof("payload")
    try:
        if payload == "to_account":
            ta = msg.to_account
            which = ta.WhichOneof("message")
            if which is None:
                raise ConvertError("to_account carries no message")
            return m.ToAccount(ta.account_id, _TO_EA[which](ta), _traceparent(ta.traceparent))
        if payload == "drop_command":
            drop = msg.drop_command
            return m.DropCommand(drop.account_id, drop.command_id, drop.reason)
        if payload == "delivery_heartbeat" and msg.delivery_heartbeat.HasField("config"):
            return m.DeliveryHeartbeat(_delivery_config(msg.delivery_heartbeat.config))
    except ConvertError:
        raise
    except (ValueError, TypeError) as exc:  # the domain's validation: a bad value from the peer
        raise ConvertError(f"{payload}: {exc}") from exc
    raise ConvertError("a CoreMessage with no payload the stream expects here")
