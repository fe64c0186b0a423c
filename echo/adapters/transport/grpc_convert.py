"""Domain messages <-> the split-mode protobuf contracts (``protos/echo/v1``, generated in ``pb`` by
``make proto``: protobuf's classes, run by its upb C backend).

Every message is converted by hand, field by field: a domain message becomes a protobuf one through one
constructor call, and back through plain attribute reads. Enums map by member name
(``ErrorCode.ERR_INVALID_PRICE`` <-> ``ERROR_CODE_INVALID_PRICE``), in tables built once at import. A
protobuf ``optional`` keeps "unset" apart from zero: ``None`` on the domain side. What a peer sends is
checked by ``wire_problem`` before the parser reads it, then by the domain messages' own validation: a
message that fails either is a ``ConvertError``."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

from echo.adapters.transport.pb.echo.v1 import agent_pb2 as apb
from echo.adapters.transport.pb.echo.v1 import common_pb2 as cpb
from echo.adapters.transport.pb.echo.v1 import trade_pb2 as tpb
from echo.domain import messages as m
from echo.domain.errors import ErrorCode
from echo.domain.types import Role, Side, SymbolSpec


class ConvertError(ValueError):
    """A protobuf message that does not make a valid domain message."""


E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V", bound=int)


def _enum_tables(domain: type[E], values: type[V], prefix: str) -> tuple[dict[E, V], dict[int, E]]:
    """Both directions of one enum, by member name: ``prefix`` + the domain name (``ERR_`` dropped)."""
    wrapper: Any = values  # at run time protobuf's EnumTypeWrapper, typed as the enum by the stubs
    to_pb: dict[E, V] = {
        member: wrapper.Value(prefix + member.name.removeprefix("ERR_")) for member in domain
    }
    return to_pb, {number: member for member, number in to_pb.items()}


_SIDE, _SIDE_BACK = _enum_tables(Side, cpb.OrderSide, "ORDER_SIDE_")
_ROLE, _ROLE_BACK = _enum_tables(Role, cpb.Role, "ROLE_")
_ERROR, _ERROR_BACK = _enum_tables(ErrorCode, cpb.ErrorCode, "ERROR_CODE_")
_ACK_STATUS, _ACK_STATUS_BACK = _enum_tables(m.AckStatus, tpb.AckStatus, "ACK_STATUS_")
_CLOSE_REASON, _CLOSE_REASON_BACK = _enum_tables(m.CloseReason, tpb.CloseReason, "CLOSE_REASON_")
_REGISTRATION, _REGISTRATION_BACK = _enum_tables(
    m.RegistrationStatus, apb.RegistrationStatus, "REGISTRATION_STATUS_"
)
_STAGE, _STAGE_BACK = _enum_tables(m.AckStage, apb.AckStage, "ACK_STAGE_")
_RESULT, _RESULT_BACK = _enum_tables(m.AckResult, apb.AckResult, "ACK_RESULT_")


def _member(table: dict[int, E], number: int, what: str) -> E:
    member = table.get(number)
    if member is None:
        raise ConvertError(f"{what} {number} has no meaning here")
    return member


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


# --- the EA messages, both ways -----------------------------------------------------------------------------
# pb -> domain: ``msg.HasField(name)`` tells an unset optional from zero.


def _symbol_spec_pb(s: SymbolSpec) -> cpb.SymbolSpec:
    return cpb.SymbolSpec(
        broker_symbol=s.broker_symbol, canonical_symbol=s.canonical_symbol, digits=s.digits, point=s.point,
        tick_size=s.tick_size, min_lot=s.min_lot, max_lot=s.max_lot, lot_step=s.lot_step,
        stop_level=s.stop_level, contract_size=s.contract_size, tick_value=s.tick_value,
    )  # fmt: skip


def _symbol_spec(p: cpb.SymbolSpec) -> SymbolSpec:
    return SymbolSpec(
        p.broker_symbol, p.canonical_symbol, p.digits, p.point, p.tick_size, p.min_lot, p.max_lot,
        p.lot_step, p.stop_level,
        p.contract_size if p.HasField("contract_size") else None,
        p.tick_value if p.HasField("tick_value") else None,
    )  # fmt: skip


def _trade_intent_pb(x: m.TradeIntent) -> tpb.TradeIntent:
    return tpb.TradeIntent(
        trade_id=x.trade_id, trace_id=x.trace_id, symbol=x.symbol, side=_SIDE[x.side], lot_size=x.lot_size,
        price=x.price, magic_number=x.magic_number, ticket=x.ticket, stop_loss=x.stop_loss,
        take_profit=x.take_profit, attempt=x.attempt, strategy_id=x.strategy_id, comment=x.comment,
        opened_at_ms=x.opened_at_ms,
    )  # fmt: skip


def _trade_intent(p: tpb.TradeIntent) -> m.TradeIntent:
    return m.TradeIntent(
        p.trade_id, p.trace_id, p.symbol, _member(_SIDE_BACK, p.side, "side"), p.lot_size, p.price,
        p.magic_number, p.ticket,
        p.stop_loss if p.HasField("stop_loss") else None,
        p.take_profit if p.HasField("take_profit") else None,
        p.attempt, p.strategy_id, p.comment,
        p.opened_at_ms if p.HasField("opened_at_ms") else None,
    )  # fmt: skip


def _trade_close_pb(x: m.TradeClose) -> tpb.TradeClose:
    return tpb.TradeClose(
        event_id=x.event_id, trade_id=x.trade_id, trace_id=x.trace_id, ticket=x.ticket, symbol=x.symbol,
        lot_size=x.lot_size, remaining_lots=x.remaining_lots, price=x.price, magic_number=x.magic_number,
        new_ticket=x.new_ticket, attempt=x.attempt,
    )  # fmt: skip


def _trade_close(p: tpb.TradeClose) -> m.TradeClose:
    return m.TradeClose(
        p.event_id, p.trade_id, p.trace_id, p.ticket, p.symbol, p.lot_size, p.remaining_lots, p.price,
        p.magic_number, p.new_ticket if p.HasField("new_ticket") else None, p.attempt,
    )  # fmt: skip


def _trade_modify_pb(x: m.TradeModify) -> tpb.TradeModify:
    return tpb.TradeModify(
        event_id=x.event_id, trade_id=x.trade_id, trace_id=x.trace_id, ticket=x.ticket, symbol=x.symbol,
        magic_number=x.magic_number, stop_loss=x.stop_loss, take_profit=x.take_profit, attempt=x.attempt,
    )  # fmt: skip


def _trade_modify(p: tpb.TradeModify) -> m.TradeModify:
    return m.TradeModify(
        p.event_id, p.trade_id, p.trace_id, p.ticket, p.symbol, p.magic_number,
        p.stop_loss if p.HasField("stop_loss") else None,
        p.take_profit if p.HasField("take_profit") else None,
        p.attempt,
    )  # fmt: skip


def _execution_result_pb(x: m.ExecutionResult) -> tpb.ExecutionResult:
    return tpb.ExecutionResult(
        command_id=x.command_id, trade_id=x.trade_id, trace_id=x.trace_id, success=x.success,
        error_code=_ERROR[x.error_code], ticket=x.ticket, executed_price=x.executed_price,
        executed_lots=x.executed_lots, executed_at_ms=x.executed_at_ms, mt4_error=x.mt4_error,
        error_message=x.error_message,
    )  # fmt: skip


def _execution_result(p: tpb.ExecutionResult) -> m.ExecutionResult:
    return m.ExecutionResult(
        p.command_id, p.trade_id, p.trace_id, p.success, _member(_ERROR_BACK, p.error_code, "error_code"),
        p.ticket if p.HasField("ticket") else None,
        p.executed_price if p.HasField("executed_price") else None,
        p.executed_lots if p.HasField("executed_lots") else None,
        p.executed_at_ms if p.HasField("executed_at_ms") else None,
        p.mt4_error, p.error_message,
    )  # fmt: skip


def _close_result_pb(x: m.CloseResult) -> tpb.CloseResult:
    return tpb.CloseResult(
        command_id=x.command_id, trade_id=x.trade_id, trace_id=x.trace_id, success=x.success,
        error_code=_ERROR[x.error_code], ticket=x.ticket, closed_lots=x.closed_lots,
        close_price=x.close_price, new_ticket=x.new_ticket, remaining_lots=x.remaining_lots,
        mt4_error=x.mt4_error, error_message=x.error_message,
    )  # fmt: skip


def _close_result(p: tpb.CloseResult) -> m.CloseResult:
    return m.CloseResult(
        p.command_id, p.trade_id, p.trace_id, p.success, _member(_ERROR_BACK, p.error_code, "error_code"),
        p.ticket, p.closed_lots,  # the domain's default is 0.0, not "unset"
        p.close_price if p.HasField("close_price") else None,
        p.new_ticket if p.HasField("new_ticket") else None,
        p.remaining_lots, p.mt4_error, p.error_message,
    )  # fmt: skip


def _modify_result_pb(x: m.ModifyResult) -> tpb.ModifyResult:
    return tpb.ModifyResult(
        command_id=x.command_id, trade_id=x.trade_id, trace_id=x.trace_id, success=x.success,
        error_code=_ERROR[x.error_code], ticket=x.ticket, stop_loss=x.stop_loss, take_profit=x.take_profit,
        mt4_error=x.mt4_error, error_message=x.error_message,
    )  # fmt: skip


def _modify_result(p: tpb.ModifyResult) -> m.ModifyResult:
    return m.ModifyResult(
        p.command_id, p.trade_id, p.trace_id, p.success, _member(_ERROR_BACK, p.error_code, "error_code"),
        p.ticket,
        p.stop_loss if p.HasField("stop_loss") else None,
        p.take_profit if p.HasField("take_profit") else None,
        p.mt4_error, p.error_message,
    )  # fmt: skip


def _quotes_pb(x: m.Quotes) -> tpb.Quotes:
    return tpb.Quotes(
        quotes=[tpb.Quote(symbol=q.symbol, bid=q.bid, ask=q.ask, time_ms=q.time_ms) for q in x.quotes]
    )


def _quotes(p: tpb.Quotes) -> m.Quotes:
    return m.Quotes([m.Quote(q.symbol, q.bid, q.ask, q.time_ms) for q in p.quotes])


def _state_snapshot_pb(x: m.StateSnapshot) -> tpb.StateSnapshot:
    return tpb.StateSnapshot(
        balance=x.balance, equity=x.equity, margin=x.margin, free_margin=x.free_margin, currency=x.currency,
        leverage=x.leverage,
        positions=[
            tpb.Position(
                ticket=p.ticket, symbol=p.symbol, side=_SIDE[p.side], lots=p.lots, open_price=p.open_price,
                magic_number=p.magic_number, comment=p.comment, stop_loss=p.stop_loss,
                take_profit=p.take_profit, open_time_ms=p.open_time_ms, profit=p.profit,
            )
            for p in x.positions
        ],
        tick_values=[tpb.TickValue(symbol=t.symbol, tick_value=t.tick_value) for t in x.tick_values],
        recent_closes=[
            tpb.ClosedPosition(
                ticket=c.ticket, symbol=c.symbol, lots=c.lots, close_price=c.close_price,
                closed_at_ms=c.closed_at_ms, reason=_CLOSE_REASON[c.reason],
            )
            for c in x.recent_closes
        ],
    )  # fmt: skip


def _state_snapshot(p: tpb.StateSnapshot) -> m.StateSnapshot:
    return m.StateSnapshot(
        p.balance, p.equity, p.margin, p.free_margin, p.currency, p.leverage,
        [
            m.Position(
                q.ticket, q.symbol, _member(_SIDE_BACK, q.side, "side"), q.lots, q.open_price,
                q.magic_number, q.comment,
                q.stop_loss if q.HasField("stop_loss") else None,
                q.take_profit if q.HasField("take_profit") else None,
                q.open_time_ms if q.HasField("open_time_ms") else None,
                q.profit,
            )
            for q in p.positions
        ],
        [m.TickValue(t.symbol, t.tick_value) for t in p.tick_values],
        [
            m.ClosedPosition(
                c.ticket, c.symbol, c.lots, c.close_price, c.closed_at_ms,
                _member(_CLOSE_REASON_BACK, c.reason, "reason"),
            )
            for c in p.recent_closes
        ],
    )  # fmt: skip


def _execute_order_pb(x: m.ExecuteOrder) -> tpb.ExecuteOrder:
    return tpb.ExecuteOrder(
        command_id=x.command_id, trade_id=x.trade_id, trace_id=x.trace_id, symbol=x.symbol,
        side=_SIDE[x.side], lot_size=x.lot_size, magic_number=x.magic_number, comment=x.comment,
        stop_loss=x.stop_loss, take_profit=x.take_profit, master_price=x.master_price,
        max_slippage_points=x.max_slippage_points, max_spread_points=x.max_spread_points,
        attempt=x.attempt,
    )  # fmt: skip


def _execute_order(p: tpb.ExecuteOrder) -> m.ExecuteOrder:
    return m.ExecuteOrder(
        p.command_id, p.trade_id, p.trace_id, p.symbol, _member(_SIDE_BACK, p.side, "side"), p.lot_size,
        p.magic_number, p.comment,
        p.stop_loss if p.HasField("stop_loss") else None,
        p.take_profit if p.HasField("take_profit") else None,
        p.master_price if p.HasField("master_price") else None,
        p.max_slippage_points if p.HasField("max_slippage_points") else None,
        p.max_spread_points if p.HasField("max_spread_points") else None,
        p.attempt,
    )  # fmt: skip


def _close_order_pb(x: m.CloseOrder) -> tpb.CloseOrder:
    return tpb.CloseOrder(
        command_id=x.command_id, trade_id=x.trade_id, trace_id=x.trace_id, ticket=x.ticket, symbol=x.symbol,
        lot_size=x.lot_size, magic_number=x.magic_number, attempt=x.attempt,
    )  # fmt: skip


def _close_order(p: tpb.CloseOrder) -> m.CloseOrder:
    return m.CloseOrder(
        p.command_id, p.trade_id, p.trace_id, p.ticket, p.symbol, p.lot_size, p.magic_number, p.attempt
    )


def _modify_order_pb(x: m.ModifyOrder) -> tpb.ModifyOrder:
    return tpb.ModifyOrder(
        command_id=x.command_id, trade_id=x.trade_id, trace_id=x.trace_id, ticket=x.ticket, symbol=x.symbol,
        stop_loss=x.stop_loss, take_profit=x.take_profit, attempt=x.attempt,
    )  # fmt: skip


def _modify_order(p: tpb.ModifyOrder) -> m.ModifyOrder:
    return m.ModifyOrder(
        p.command_id, p.trade_id, p.trace_id, p.ticket, p.symbol,
        p.stop_loss if p.HasField("stop_loss") else None,
        p.take_profit if p.HasField("take_profit") else None,
        p.attempt,
    )  # fmt: skip


def _trade_intent_ack_pb(x: m.TradeIntentAck) -> tpb.TradeIntentAck:
    return tpb.TradeIntentAck(
        trade_id=x.trade_id, trace_id=x.trace_id, status=_ACK_STATUS[x.status], event_id=x.event_id,
        error_code=_ERROR[x.error_code], message=x.message,
    )  # fmt: skip


def _trade_intent_ack(p: tpb.TradeIntentAck) -> m.TradeIntentAck:
    return m.TradeIntentAck(
        p.trade_id, p.trace_id, _member(_ACK_STATUS_BACK, p.status, "status"),
        p.event_id if p.HasField("event_id") else None,
        _member(_ERROR_BACK, p.error_code, "error_code"), p.message,
    )  # fmt: skip


def _issues_pb(issues: list[m.RegistrationIssue]) -> list[apb.RegistrationIssue]:
    return [apb.RegistrationIssue(code=i.code, message=i.message, metadata=i.metadata) for i in issues]


def _issues(issues: Any) -> list[m.RegistrationIssue]:
    return [m.RegistrationIssue(i.code, i.message, dict(i.metadata)) for i in issues]


def _registration_result_pb(x: m.SymbolRegistrationResult) -> apb.SymbolRegistrationResult:
    return apb.SymbolRegistrationResult(
        account_id=x.account_id, pipe_role=_ROLE[x.pipe_role], protocol_version=x.protocol_version,
        agent_id=x.agent_id, core_version=x.core_version, status=_REGISTRATION[x.status],
        errors=_issues_pb(x.errors), warnings=_issues_pb(x.warnings),
        symbols=[
            apb.SymbolRegistrationEntry(
                canonical_symbol=s.canonical_symbol, broker_symbol=s.broker_symbol,
                status=_REGISTRATION[s.status], warnings=_issues_pb(s.warnings), errors=_issues_pb(s.errors),
                spec_age_ms=s.spec_age_ms, evaluated_at_ms=s.evaluated_at_ms,
            )
            for s in x.symbols
        ],
        evaluated_at_ms=x.evaluated_at_ms, evaluation_id=x.evaluation_id,
    )  # fmt: skip


def _registration_result(p: apb.SymbolRegistrationResult) -> m.SymbolRegistrationResult:
    return m.SymbolRegistrationResult(
        p.account_id, _member(_ROLE_BACK, p.pipe_role, "pipe_role"), p.protocol_version, p.agent_id,
        p.core_version, _member(_REGISTRATION_BACK, p.status, "status"), p.evaluated_at_ms,
        p.evaluation_id, _issues(p.errors), _issues(p.warnings),
        [
            m.SymbolRegistrationEntry(
                s.canonical_symbol, s.broker_symbol, _member(_REGISTRATION_BACK, s.status, "status"),
                _issues(s.warnings), _issues(s.errors), s.spec_age_ms, s.evaluated_at_ms,
            )
            for s in p.symbols
        ],
    )  # fmt: skip


def _delivery_config_pb(x: m.DeliveryConfig) -> apb.DeliveryConfig:
    return apb.DeliveryConfig(
        ack_timeout_ms=x.ack_timeout_ms, retry_backoff_ms=x.retry_backoff_ms, max_retries=x.max_retries,
        heartbeat_interval_ms=x.heartbeat_interval_ms,
    )  # fmt: skip


def _delivery_config(p: apb.DeliveryConfig) -> m.DeliveryConfig:
    return m.DeliveryConfig(p.ack_timeout_ms, p.retry_backoff_ms, p.max_retries, p.heartbeat_interval_ms)


def _command_ack_pb(x: m.CommandAck) -> apb.CommandAck:
    return apb.CommandAck(
        account_id=x.account_id, command_id=x.command_id, stage=_STAGE[x.stage], result=_RESULT[x.result],
        reason=x.reason,
    )  # fmt: skip


def _command_ack(p: apb.CommandAck) -> m.CommandAck:
    return m.CommandAck(
        p.account_id, p.command_id, _member(_STAGE_BACK, p.stage, "stage"),
        _member(_RESULT_BACK, p.result, "result"), p.reason,
    )  # fmt: skip


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


def agent_message(msg: m.AgentToCore) -> apb.AgentMessage:
    if isinstance(msg, m.FromAccount):
        field, encode = _FROM_EA_PB[type(msg.message)]
        return apb.AgentMessage(
            from_account=apb.FromAccount(
                account_id=msg.account_id, received_ms=msg.received_ms, **{field: encode(msg.message)}
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
            return m.FromAccount(fa.account_id, _FROM_EA[which](fa), fa.received_ms)
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
            to_account=apb.ToAccount(account_id=msg.account_id, **{field: encode(msg.message)})
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
            return m.ToAccount(ta.account_id, _TO_EA[which](ta))
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
