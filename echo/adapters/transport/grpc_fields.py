"""Each split-mode message converted by hand, both ways: a domain message to its protobuf class through
one constructor call, and back through plain attribute reads (``HasField`` tells an unset optional from
zero); enums by member name in tables built once at import. A protobuf message that does not make a
valid domain message is a ``ConvertError``."""

from __future__ import annotations

import enum
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
