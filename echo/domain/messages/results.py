"""What a slave reports about a command: its pipe delivery ack and the result of executing it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from echo.domain.errors import ErrorCode
from echo.domain.ids import parse_command_id, parse_ticket, parse_trace_id
from echo.domain.messages._checks import check_numbers, check_trade_ids


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    command_id: str
    trade_id: str
    trace_id: str
    success: bool
    error_code: ErrorCode
    ticket: int | None = None
    executed_price: float | None = None
    executed_lots: float | None = None
    executed_at_ms: int | None = None
    mt4_error: int = 0
    error_message: str = ""

    def __post_init__(self) -> None:
        check_numbers(self)
        parse_command_id(self.command_id)
        check_trade_ids(self.trade_id, self.trace_id)
        if self.success:
            if self.ticket is None or self.error_code is not ErrorCode.NO_ERROR:
                raise ValueError("a successful execution_result needs a ticket and error_code NO_ERROR")
            parse_ticket(self.ticket)
        elif self.error_code is ErrorCode.NO_ERROR:
            raise ValueError("a failed execution_result needs an ERR_* error_code")


@dataclass(frozen=True, slots=True)
class CloseResult:
    command_id: str
    trade_id: str
    trace_id: str
    success: bool
    error_code: ErrorCode
    ticket: int
    closed_lots: float = 0.0
    close_price: float | None = None
    new_ticket: int | None = None
    """Remainder ticket after a partial close (None after a full close)."""
    remaining_lots: float = 0.0
    mt4_error: int = 0
    error_message: str = ""

    def __post_init__(self) -> None:
        check_numbers(self)
        parse_command_id(self.command_id)
        check_trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        if self.new_ticket is not None:
            parse_ticket(self.new_ticket)
        if self.success and self.error_code is not ErrorCode.NO_ERROR:
            raise ValueError("a successful close_result needs error_code NO_ERROR")
        if not self.success and self.error_code is ErrorCode.NO_ERROR:
            raise ValueError("a failed close_result needs an ERR_* error_code")
        if self.success and self.remaining_lots > 0 and self.new_ticket is None:
            raise ValueError("a partial close_result must carry new_ticket")


@dataclass(frozen=True, slots=True)
class ModifyResult:
    command_id: str
    trade_id: str
    trace_id: str
    success: bool
    error_code: ErrorCode
    ticket: int
    stop_loss: float | None = None
    take_profit: float | None = None
    mt4_error: int = 0
    error_message: str = ""

    def __post_init__(self) -> None:
        check_numbers(self)
        parse_command_id(self.command_id)
        check_trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        if self.success != (self.error_code is ErrorCode.NO_ERROR):
            raise ValueError("success must match error_code (NO_ERROR exactly when success)")


Result = ExecutionResult | CloseResult | ModifyResult


class DeliveryStatus(enum.Enum):
    OK = "OK"
    RETRY = "RETRY"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class PipeDeliveryAck:
    """Slave -> Agent: the command line was received and parsed (before execution)."""

    command_id: str
    trace_id: str
    status: DeliveryStatus
    reason: str = ""

    def __post_init__(self) -> None:
        check_numbers(self)
        parse_command_id(self.command_id)
        parse_trace_id(self.trace_id)
