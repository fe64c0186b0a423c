from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class OrderSide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_SIDE_UNSPECIFIED: _ClassVar[OrderSide]
    ORDER_SIDE_BUY: _ClassVar[OrderSide]
    ORDER_SIDE_SELL: _ClassVar[OrderSide]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_MASTER: _ClassVar[Role]
    ROLE_SLAVE: _ClassVar[Role]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_NO_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_PRICE: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_STOPS: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_TRADE_VOLUME: _ClassVar[ErrorCode]
    ERROR_CODE_OFF_QUOTES: _ClassVar[ErrorCode]
    ERROR_CODE_REQUOTE: _ClassVar[ErrorCode]
    ERROR_CODE_BROKER_BUSY: _ClassVar[ErrorCode]
    ERROR_CODE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_MARKET_CLOSED: _ClassVar[ErrorCode]
    ERROR_CODE_TRADE_DISABLED: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_ENOUGH_MONEY: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_TICKET: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN_SYMBOL: _ClassVar[ErrorCode]
    ERROR_CODE_TRADE_CONTEXT_BUSY: _ClassVar[ErrorCode]
    ERROR_CODE_COMMON: _ClassVar[ErrorCode]
    ERROR_CODE_SPREAD_TOO_WIDE: _ClassVar[ErrorCode]
    ERROR_CODE_SLIPPAGE_TOO_HIGH: _ClassVar[ErrorCode]
    ERROR_CODE_SPEC_MISSING: _ClassVar[ErrorCode]
    ERROR_CODE_ACCOUNT_OFFLINE: _ClassVar[ErrorCode]
    ERROR_CODE_DUPLICATE: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN: _ClassVar[ErrorCode]
ORDER_SIDE_UNSPECIFIED: OrderSide
ORDER_SIDE_BUY: OrderSide
ORDER_SIDE_SELL: OrderSide
ROLE_UNSPECIFIED: Role
ROLE_MASTER: Role
ROLE_SLAVE: Role
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_NO_ERROR: ErrorCode
ERROR_CODE_INVALID_PRICE: ErrorCode
ERROR_CODE_INVALID_STOPS: ErrorCode
ERROR_CODE_INVALID_TRADE_VOLUME: ErrorCode
ERROR_CODE_OFF_QUOTES: ErrorCode
ERROR_CODE_REQUOTE: ErrorCode
ERROR_CODE_BROKER_BUSY: ErrorCode
ERROR_CODE_TIMEOUT: ErrorCode
ERROR_CODE_MARKET_CLOSED: ErrorCode
ERROR_CODE_TRADE_DISABLED: ErrorCode
ERROR_CODE_NOT_ENOUGH_MONEY: ErrorCode
ERROR_CODE_INVALID_TICKET: ErrorCode
ERROR_CODE_UNKNOWN_SYMBOL: ErrorCode
ERROR_CODE_TRADE_CONTEXT_BUSY: ErrorCode
ERROR_CODE_COMMON: ErrorCode
ERROR_CODE_SPREAD_TOO_WIDE: ErrorCode
ERROR_CODE_SLIPPAGE_TOO_HIGH: ErrorCode
ERROR_CODE_SPEC_MISSING: ErrorCode
ERROR_CODE_ACCOUNT_OFFLINE: ErrorCode
ERROR_CODE_DUPLICATE: ErrorCode
ERROR_CODE_UNKNOWN: ErrorCode

class SymbolSpec(_message.Message):
    __slots__ = ("broker_symbol", "canonical_symbol", "digits", "point", "tick_size", "min_lot", "max_lot", "lot_step", "stop_level", "contract_size", "tick_value")
    BROKER_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_LOT_FIELD_NUMBER: _ClassVar[int]
    MAX_LOT_FIELD_NUMBER: _ClassVar[int]
    LOT_STEP_FIELD_NUMBER: _ClassVar[int]
    STOP_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TICK_VALUE_FIELD_NUMBER: _ClassVar[int]
    broker_symbol: str
    canonical_symbol: str
    digits: int
    point: float
    tick_size: float
    min_lot: float
    max_lot: float
    lot_step: float
    stop_level: int
    contract_size: float
    tick_value: float
    def __init__(self, broker_symbol: _Optional[str] = ..., canonical_symbol: _Optional[str] = ..., digits: _Optional[int] = ..., point: _Optional[float] = ..., tick_size: _Optional[float] = ..., min_lot: _Optional[float] = ..., max_lot: _Optional[float] = ..., lot_step: _Optional[float] = ..., stop_level: _Optional[int] = ..., contract_size: _Optional[float] = ..., tick_value: _Optional[float] = ...) -> None: ...
