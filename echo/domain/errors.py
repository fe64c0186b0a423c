"""Normalized error codes: ``NO_ERROR`` on success, ``ERR_*`` otherwise, the same text in logs, the store and
on every wire. MT4's numeric trade errors are translated here, in one place."""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    NO_ERROR = "NO_ERROR"
    # broker / trade server errors (MT4 numbers in MT4_ERRORS)
    ERR_INVALID_PRICE = "ERR_INVALID_PRICE"
    ERR_INVALID_STOPS = "ERR_INVALID_STOPS"
    ERR_INVALID_TRADE_VOLUME = "ERR_INVALID_TRADE_VOLUME"
    ERR_OFF_QUOTES = "ERR_OFF_QUOTES"
    ERR_REQUOTE = "ERR_REQUOTE"
    ERR_BROKER_BUSY = "ERR_BROKER_BUSY"
    ERR_TIMEOUT = "ERR_TIMEOUT"
    ERR_MARKET_CLOSED = "ERR_MARKET_CLOSED"
    ERR_TRADE_DISABLED = "ERR_TRADE_DISABLED"
    ERR_NOT_ENOUGH_MONEY = "ERR_NOT_ENOUGH_MONEY"
    ERR_INVALID_TICKET = "ERR_INVALID_TICKET"
    ERR_UNKNOWN_SYMBOL = "ERR_UNKNOWN_SYMBOL"
    ERR_TRADE_CONTEXT_BUSY = "ERR_TRADE_CONTEXT_BUSY"
    ERR_COMMON = "ERR_COMMON"
    # copier errors
    ERR_SPREAD_TOO_WIDE = "ERR_SPREAD_TOO_WIDE"
    """The slave's live spread broke the order's ``max_spread_points``: not sent to the broker."""
    ERR_SLIPPAGE_TOO_HIGH = "ERR_SLIPPAGE_TOO_HIGH"
    """The slave's live price is further from ``master_price`` than ``max_slippage_points``: not sent."""
    ERR_SPEC_MISSING = "ERR_SPEC_MISSING"
    ERR_ACCOUNT_OFFLINE = "ERR_ACCOUNT_OFFLINE"
    ERR_DUPLICATE = "ERR_DUPLICATE"
    ERR_UNKNOWN = "ERR_UNKNOWN"


OMITTED_AT_SLAVE = frozenset({ErrorCode.ERR_SPREAD_TOO_WIDE, ErrorCode.ERR_SLIPPAGE_TOO_HIGH})
"""Execution results that are the slave applying the order's limits (an omission), not errors."""

MT4_ERRORS: dict[int, ErrorCode] = {
    0: ErrorCode.NO_ERROR,
    1: ErrorCode.NO_ERROR,  # ERR_NO_RESULT: OrderModify with unchanged values
    2: ErrorCode.ERR_COMMON,
    128: ErrorCode.ERR_TIMEOUT,
    129: ErrorCode.ERR_INVALID_PRICE,
    130: ErrorCode.ERR_INVALID_STOPS,
    131: ErrorCode.ERR_INVALID_TRADE_VOLUME,
    132: ErrorCode.ERR_MARKET_CLOSED,
    133: ErrorCode.ERR_TRADE_DISABLED,
    134: ErrorCode.ERR_NOT_ENOUGH_MONEY,
    136: ErrorCode.ERR_OFF_QUOTES,
    137: ErrorCode.ERR_BROKER_BUSY,
    138: ErrorCode.ERR_REQUOTE,
    146: ErrorCode.ERR_TRADE_CONTEXT_BUSY,
    4106: ErrorCode.ERR_UNKNOWN_SYMBOL,
    4108: ErrorCode.ERR_INVALID_TICKET,
}

MT4_NUMBERS: dict[ErrorCode, int] = {code: num for num, code in MT4_ERRORS.items() if num != 1}


def from_mt4(number: int) -> ErrorCode:
    """Translate MT4's GetLastError() number; unknown numbers become ERR_UNKNOWN."""
    return MT4_ERRORS.get(number, ErrorCode.ERR_UNKNOWN)


class ProtocolError(enum.Enum):
    """Codes carried by the EA protocol's ``error`` message."""

    ERR_PROTOCOL_MALFORMED_JSON = "ERR_PROTOCOL_MALFORMED_JSON"
    ERR_PROTOCOL_INVALID_UTF8 = "ERR_PROTOCOL_INVALID_UTF8"
    ERR_PROTOCOL_LINE_TOO_LONG = "ERR_PROTOCOL_LINE_TOO_LONG"
    ERR_PROTOCOL_UNKNOWN_TYPE = "ERR_PROTOCOL_UNKNOWN_TYPE"
    ERR_PROTOCOL_MISSING_FIELD = "ERR_PROTOCOL_MISSING_FIELD"
    ERR_PROTOCOL_WRONG_TYPE = "ERR_PROTOCOL_WRONG_TYPE"
    ERR_PROTOCOL_INVALID_VALUE = "ERR_PROTOCOL_INVALID_VALUE"
    ERR_PROTOCOL_UNEXPECTED_MESSAGE = "ERR_PROTOCOL_UNEXPECTED_MESSAGE"
    ERR_PROTOCOL_NOT_HANDSHAKEN = "ERR_PROTOCOL_NOT_HANDSHAKEN"
    ERR_PROTOCOL_VERSION_UNSUPPORTED = "ERR_PROTOCOL_VERSION_UNSUPPORTED"
    ERR_PROTOCOL_TOO_DEEP = "ERR_PROTOCOL_TOO_DEEP"
    ERR_PROTOCOL_ACCOUNT_IN_USE = "ERR_PROTOCOL_ACCOUNT_IN_USE"
    ERR_PROTOCOL_UNAUTHORIZED = "ERR_PROTOCOL_UNAUTHORIZED"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""
