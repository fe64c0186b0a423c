from echo.adapters.transport.pb.echo.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_OK: _ClassVar[AckStatus]
    ACK_STATUS_DUPLICATE: _ClassVar[AckStatus]
    ACK_STATUS_RETRY: _ClassVar[AckStatus]
    ACK_STATUS_REJECTED: _ClassVar[AckStatus]

class CloseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOSE_REASON_UNSPECIFIED: _ClassVar[CloseReason]
    CLOSE_REASON_SL: _ClassVar[CloseReason]
    CLOSE_REASON_TP: _ClassVar[CloseReason]
    CLOSE_REASON_STOP_OUT: _ClassVar[CloseReason]
    CLOSE_REASON_OTHER: _ClassVar[CloseReason]
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_OK: AckStatus
ACK_STATUS_DUPLICATE: AckStatus
ACK_STATUS_RETRY: AckStatus
ACK_STATUS_REJECTED: AckStatus
CLOSE_REASON_UNSPECIFIED: CloseReason
CLOSE_REASON_SL: CloseReason
CLOSE_REASON_TP: CloseReason
CLOSE_REASON_STOP_OUT: CloseReason
CLOSE_REASON_OTHER: CloseReason

class TradeIntent(_message.Message):
    __slots__ = ("trade_id", "trace_id", "symbol", "side", "lot_size", "price", "magic_number", "ticket", "stop_loss", "take_profit", "attempt", "strategy_id", "comment", "opened_at_ms")
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    MAGIC_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    trade_id: str
    trace_id: str
    symbol: str
    side: _common_pb2.OrderSide
    lot_size: float
    price: float
    magic_number: int
    ticket: int
    stop_loss: float
    take_profit: float
    attempt: int
    strategy_id: str
    comment: str
    opened_at_ms: int
    def __init__(self, trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.OrderSide, str]] = ..., lot_size: _Optional[float] = ..., price: _Optional[float] = ..., magic_number: _Optional[int] = ..., ticket: _Optional[int] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., attempt: _Optional[int] = ..., strategy_id: _Optional[str] = ..., comment: _Optional[str] = ..., opened_at_ms: _Optional[int] = ...) -> None: ...

class TradeClose(_message.Message):
    __slots__ = ("event_id", "trade_id", "trace_id", "ticket", "symbol", "lot_size", "remaining_lots", "price", "magic_number", "new_ticket", "attempt")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_LOTS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    MAGIC_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NEW_TICKET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    lot_size: float
    remaining_lots: float
    price: float
    magic_number: int
    new_ticket: int
    attempt: int
    def __init__(self, event_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., ticket: _Optional[int] = ..., symbol: _Optional[str] = ..., lot_size: _Optional[float] = ..., remaining_lots: _Optional[float] = ..., price: _Optional[float] = ..., magic_number: _Optional[int] = ..., new_ticket: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class TradeModify(_message.Message):
    __slots__ = ("event_id", "trade_id", "trace_id", "ticket", "symbol", "magic_number", "stop_loss", "take_profit", "attempt")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    MAGIC_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    magic_number: int
    stop_loss: float
    take_profit: float
    attempt: int
    def __init__(self, event_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., ticket: _Optional[int] = ..., symbol: _Optional[str] = ..., magic_number: _Optional[int] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., attempt: _Optional[int] = ...) -> None: ...

class TradeIntentAck(_message.Message):
    __slots__ = ("trade_id", "trace_id", "status", "event_id", "error_code", "message")
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    trade_id: str
    trace_id: str
    status: AckStatus
    event_id: str
    error_code: _common_pb2.ErrorCode
    message: str
    def __init__(self, trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., status: _Optional[_Union[AckStatus, str]] = ..., event_id: _Optional[str] = ..., error_code: _Optional[_Union[_common_pb2.ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ExecuteOrder(_message.Message):
    __slots__ = ("command_id", "trade_id", "trace_id", "symbol", "side", "lot_size", "magic_number", "comment", "stop_loss", "take_profit", "master_price", "max_slippage_points", "max_spread_points", "attempt")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAGIC_NUMBER_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    MASTER_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_SLIPPAGE_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPREAD_POINTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    trade_id: str
    trace_id: str
    symbol: str
    side: _common_pb2.OrderSide
    lot_size: float
    magic_number: int
    comment: str
    stop_loss: float
    take_profit: float
    master_price: float
    max_slippage_points: float
    max_spread_points: float
    attempt: int
    def __init__(self, command_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.OrderSide, str]] = ..., lot_size: _Optional[float] = ..., magic_number: _Optional[int] = ..., comment: _Optional[str] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., master_price: _Optional[float] = ..., max_slippage_points: _Optional[float] = ..., max_spread_points: _Optional[float] = ..., attempt: _Optional[int] = ...) -> None: ...

class CloseOrder(_message.Message):
    __slots__ = ("command_id", "trade_id", "trace_id", "ticket", "symbol", "lot_size", "magic_number", "attempt")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAGIC_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    lot_size: float
    magic_number: int
    attempt: int
    def __init__(self, command_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., ticket: _Optional[int] = ..., symbol: _Optional[str] = ..., lot_size: _Optional[float] = ..., magic_number: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class ModifyOrder(_message.Message):
    __slots__ = ("command_id", "trade_id", "trace_id", "ticket", "symbol", "stop_loss", "take_profit", "attempt")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    stop_loss: float
    take_profit: float
    attempt: int
    def __init__(self, command_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., ticket: _Optional[int] = ..., symbol: _Optional[str] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., attempt: _Optional[int] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("command_id", "trade_id", "trace_id", "success", "error_code", "ticket", "executed_price", "executed_lots", "executed_at_ms", "mt4_error", "error_message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_PRICE_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_LOTS_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MT4_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    trade_id: str
    trace_id: str
    success: bool
    error_code: _common_pb2.ErrorCode
    ticket: int
    executed_price: float
    executed_lots: float
    executed_at_ms: int
    mt4_error: int
    error_message: str
    def __init__(self, command_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., success: _Optional[bool] = ..., error_code: _Optional[_Union[_common_pb2.ErrorCode, str]] = ..., ticket: _Optional[int] = ..., executed_price: _Optional[float] = ..., executed_lots: _Optional[float] = ..., executed_at_ms: _Optional[int] = ..., mt4_error: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class CloseResult(_message.Message):
    __slots__ = ("command_id", "trade_id", "trace_id", "success", "error_code", "ticket", "closed_lots", "close_price", "new_ticket", "remaining_lots", "mt4_error", "error_message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    CLOSED_LOTS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_PRICE_FIELD_NUMBER: _ClassVar[int]
    NEW_TICKET_FIELD_NUMBER: _ClassVar[int]
    REMAINING_LOTS_FIELD_NUMBER: _ClassVar[int]
    MT4_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    trade_id: str
    trace_id: str
    success: bool
    error_code: _common_pb2.ErrorCode
    ticket: int
    closed_lots: float
    close_price: float
    new_ticket: int
    remaining_lots: float
    mt4_error: int
    error_message: str
    def __init__(self, command_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., success: _Optional[bool] = ..., error_code: _Optional[_Union[_common_pb2.ErrorCode, str]] = ..., ticket: _Optional[int] = ..., closed_lots: _Optional[float] = ..., close_price: _Optional[float] = ..., new_ticket: _Optional[int] = ..., remaining_lots: _Optional[float] = ..., mt4_error: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class ModifyResult(_message.Message):
    __slots__ = ("command_id", "trade_id", "trace_id", "success", "error_code", "ticket", "stop_loss", "take_profit", "mt4_error", "error_message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    MT4_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    trade_id: str
    trace_id: str
    success: bool
    error_code: _common_pb2.ErrorCode
    ticket: int
    stop_loss: float
    take_profit: float
    mt4_error: int
    error_message: str
    def __init__(self, command_id: _Optional[str] = ..., trade_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., success: _Optional[bool] = ..., error_code: _Optional[_Union[_common_pb2.ErrorCode, str]] = ..., ticket: _Optional[int] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., mt4_error: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("symbol", "bid", "ask", "time_ms")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bid: float
    ask: float
    time_ms: int
    def __init__(self, symbol: _Optional[str] = ..., bid: _Optional[float] = ..., ask: _Optional[float] = ..., time_ms: _Optional[int] = ...) -> None: ...

class Quotes(_message.Message):
    __slots__ = ("quotes",)
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[Quote]
    def __init__(self, quotes: _Optional[_Iterable[_Union[Quote, _Mapping]]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("ticket", "symbol", "side", "lots", "open_price", "magic_number", "comment", "stop_loss", "take_profit", "open_time_ms", "profit")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    LOTS_FIELD_NUMBER: _ClassVar[int]
    OPEN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAGIC_NUMBER_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PROFIT_FIELD_NUMBER: _ClassVar[int]
    ticket: int
    symbol: str
    side: _common_pb2.OrderSide
    lots: float
    open_price: float
    magic_number: int
    comment: str
    stop_loss: float
    take_profit: float
    open_time_ms: int
    profit: float
    def __init__(self, ticket: _Optional[int] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.OrderSide, str]] = ..., lots: _Optional[float] = ..., open_price: _Optional[float] = ..., magic_number: _Optional[int] = ..., comment: _Optional[str] = ..., stop_loss: _Optional[float] = ..., take_profit: _Optional[float] = ..., open_time_ms: _Optional[int] = ..., profit: _Optional[float] = ...) -> None: ...

class TickValue(_message.Message):
    __slots__ = ("symbol", "tick_value")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    TICK_VALUE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    tick_value: float
    def __init__(self, symbol: _Optional[str] = ..., tick_value: _Optional[float] = ...) -> None: ...

class ClosedPosition(_message.Message):
    __slots__ = ("ticket", "symbol", "lots", "close_price", "closed_at_ms", "reason")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LOTS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_PRICE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ticket: int
    symbol: str
    lots: float
    close_price: float
    closed_at_ms: int
    reason: CloseReason
    def __init__(self, ticket: _Optional[int] = ..., symbol: _Optional[str] = ..., lots: _Optional[float] = ..., close_price: _Optional[float] = ..., closed_at_ms: _Optional[int] = ..., reason: _Optional[_Union[CloseReason, str]] = ...) -> None: ...

class StateSnapshot(_message.Message):
    __slots__ = ("balance", "equity", "margin", "free_margin", "currency", "leverage", "positions", "tick_values", "recent_closes")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    EQUITY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    FREE_MARGIN_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LEVERAGE_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    TICK_VALUES_FIELD_NUMBER: _ClassVar[int]
    RECENT_CLOSES_FIELD_NUMBER: _ClassVar[int]
    balance: float
    equity: float
    margin: float
    free_margin: float
    currency: str
    leverage: int
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    tick_values: _containers.RepeatedCompositeFieldContainer[TickValue]
    recent_closes: _containers.RepeatedCompositeFieldContainer[ClosedPosition]
    def __init__(self, balance: _Optional[float] = ..., equity: _Optional[float] = ..., margin: _Optional[float] = ..., free_margin: _Optional[float] = ..., currency: _Optional[str] = ..., leverage: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ..., tick_values: _Optional[_Iterable[_Union[TickValue, _Mapping]]] = ..., recent_closes: _Optional[_Iterable[_Union[ClosedPosition, _Mapping]]] = ...) -> None: ...
