"""The messages of the copier (RFC-001 section 4 and the later seeds), as frozen dataclasses.

These are the payloads of the EA wire protocol (``conformance/PROTOCOL.md``) and the units carried by
the Core <-> Agent transport. Units: prices are in the symbol's quote currency (never points); lots are
lots; ``*_points`` fields are in MT4 points of the symbol they name; times are Unix milliseconds (UTC).
Every trade message carries the ``trace_id`` born at the master.

Each class validates itself on construction (``__post_init__``); decoders surface those errors as
``invalid value`` replies.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, fields

from echo.domain.errors import ErrorCode
from echo.domain.ids import (
    parse_account_id,
    parse_command_id,
    parse_event_id,
    parse_magic,
    parse_ticket,
    parse_trace_id,
    parse_trade_id,
)
from echo.domain.types import Role, Side, SymbolSpec

PROTOCOL_VERSION = 2
"""The EA protocol version this build speaks (handshake v2 of RFC-005a)."""


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_NUMERIC_FIELDS: dict[type, tuple[str, ...]] = {}


_TERMINAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _numeric_fields(cls: type) -> tuple[str, ...]:
    names = _NUMERIC_FIELDS.get(cls)
    if names is None:
        # annotations are strings here (postponed evaluation): pick the scalar int/float fields
        names = tuple(
            f.name
            for f in fields(cls)
            if isinstance(f.type, str) and f.type.split(" ")[0] in ("int", "float") and "list" not in f.type
        )
        _NUMERIC_FIELDS[cls] = names
    return names


def _numbers(obj: object) -> None:
    """Every float finite, every int within 64 bits: what the store and every peer can represent."""
    for name in _numeric_fields(type(obj)):
        v = getattr(obj, name)
        if v is None:
            continue
        if type(v) is float:
            if not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v}")
        elif not _INT64_MIN <= v <= _INT64_MAX:
            raise ValueError(f"{name} is outside the 64-bit integer range")


def _attempt(v: int) -> None:
    if v < 1:
        raise ValueError(f"attempt must be >= 1, got {v}")


def _finite_pos(kind: str, v: float) -> None:
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{kind} must be a finite number > 0, got {v}")


def _opt_price(kind: str, v: float | None) -> None:
    if v is not None and (not math.isfinite(v) or v < 0):
        raise ValueError(f"{kind} must be a finite price >= 0 or null, got {v}")


def _symbol(v: str) -> None:
    if not v or len(v) > 32 or not v.isprintable():
        raise ValueError(f"symbol must be 1-32 printable characters, got {v!r}")


def _trade_ids(trade_id: str, trace_id: str) -> None:
    parse_trade_id(trade_id)
    parse_trace_id(trace_id)


# --------------------------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class Capabilities:
    features: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Handshake:
    """First message on every EA connection (and after every reconnect)."""

    account_id: str
    role: Role
    protocol_version: int = 1
    client_semver: str = ""
    client_id: str = ""
    broker: str = ""
    terminal_build: int | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    symbols: list[SymbolSpec] = field(default_factory=list)
    symbol_mappings: dict[str, str] = field(default_factory=dict)
    """Master only: broker symbol -> canonical symbol (the EA input ``SymbolMappings``)."""
    terminal_id: str = ""
    """Random, generated once by the EA and kept in the terminal's files folder: proves a new connection
    comes from the terminal that holds the account's live one."""
    token: str = ""
    """The Agent's ``agent.token``, when it has one (the EA input ``AgentToken``)."""

    def __post_init__(self) -> None:
        _numbers(self)
        parse_account_id(self.account_id)
        if self.terminal_id and not _TERMINAL_ID_RE.match(self.terminal_id):
            raise ValueError(
                f"terminal_id must be 16-64 characters of [A-Za-z0-9_-], got {self.terminal_id!r}"
            )
        if len(self.token) > 256:
            raise ValueError("token must be at most 256 characters")
        if self.protocol_version < 1:
            raise ValueError(f"protocol_version must be >= 1, got {self.protocol_version}")
        seen: set[str] = set()
        for s in self.symbols:
            if s.broker_symbol in seen:
                raise ValueError(f"symbol {s.broker_symbol!r} reported twice")
            seen.add(s.broker_symbol)


# ----------------------------------------------------------------------------------------- master -> core


@dataclass(frozen=True, slots=True)
class TradeIntent:
    """A master opened a market position."""

    trade_id: str
    trace_id: str
    symbol: str
    side: Side
    lot_size: float
    price: float
    magic_number: int
    ticket: int
    stop_loss: float | None = None
    take_profit: float | None = None
    attempt: int = 1
    strategy_id: str = ""
    comment: str = ""
    opened_at_ms: int | None = None

    def __post_init__(self) -> None:
        _numbers(self)
        _trade_ids(self.trade_id, self.trace_id)
        _symbol(self.symbol)
        _finite_pos("lot_size", self.lot_size)
        _finite_pos("price", self.price)
        parse_magic(self.magic_number)
        parse_ticket(self.ticket)
        _opt_price("stop_loss", self.stop_loss)
        _opt_price("take_profit", self.take_profit)
        _attempt(self.attempt)


@dataclass(frozen=True, slots=True)
class TradeClose:
    """A master closed a position fully (``remaining_lots == 0``) or partially."""

    event_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    lot_size: float
    """Lots closed by this event."""
    remaining_lots: float
    """Lots still open on the master after this event (0 = full close)."""
    price: float
    magic_number: int
    new_ticket: int | None = None
    """MT4 gives the remainder of a partial close a new ticket; the master reports it here."""
    attempt: int = 1

    def __post_init__(self) -> None:
        _numbers(self)
        _attempt(self.attempt)
        parse_event_id(self.event_id)
        _trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        _symbol(self.symbol)
        _finite_pos("lot_size", self.lot_size)
        if not math.isfinite(self.remaining_lots) or self.remaining_lots < 0:
            raise ValueError(f"remaining_lots must be >= 0, got {self.remaining_lots}")
        _finite_pos("price", self.price)
        parse_magic(self.magic_number)
        if self.new_ticket is not None:
            parse_ticket(self.new_ticket)
        if self.remaining_lots > 0 and self.new_ticket is None:
            raise ValueError("a partial close (remaining_lots > 0) must carry new_ticket")

    @property
    def is_partial(self) -> bool:
        return self.remaining_lots > 0

    @property
    def fraction(self) -> float:
        """Share of the position (before this event) that this event closed."""
        return self.lot_size / (self.lot_size + self.remaining_lots)


@dataclass(frozen=True, slots=True)
class TradeModify:
    """A master changed the SL/TP of a position (null = no stop)."""

    event_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    magic_number: int
    stop_loss: float | None = None
    take_profit: float | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        _numbers(self)
        _attempt(self.attempt)
        parse_event_id(self.event_id)
        _trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        _symbol(self.symbol)
        parse_magic(self.magic_number)
        _opt_price("stop_loss", self.stop_loss)
        _opt_price("take_profit", self.take_profit)


class AckStatus(enum.Enum):
    OK = "OK"
    DUPLICATE = "DUPLICATE"
    RETRY = "RETRY"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class TradeIntentAck:
    """Agent -> master: the intent (or close/modify event, by ``event_id``) is safe with Core."""

    trade_id: str
    trace_id: str
    status: AckStatus
    event_id: str | None = None
    error_code: ErrorCode = ErrorCode.NO_ERROR
    message: str = ""

    def __post_init__(self) -> None:
        _numbers(self)
        _trade_ids(self.trade_id, self.trace_id)
        if self.event_id is not None:
            parse_event_id(self.event_id)


# ------------------------------------------------------------------------------------------ core -> slave


@dataclass(frozen=True, slots=True)
class ExecuteOrder:
    """Open a market position on one slave account. ``symbol`` is the slave broker's symbol."""

    command_id: str
    trade_id: str
    trace_id: str
    symbol: str
    side: Side
    lot_size: float
    magic_number: int
    comment: str
    stop_loss: float | None = None
    take_profit: float | None = None
    master_price: float | None = None
    max_slippage_points: float | None = None
    max_spread_points: float | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        _numbers(self)
        _attempt(self.attempt)
        parse_command_id(self.command_id)
        _trade_ids(self.trade_id, self.trace_id)
        _symbol(self.symbol)
        _finite_pos("lot_size", self.lot_size)
        parse_magic(self.magic_number)
        if len(self.comment) > 31:
            raise ValueError("comment must fit MT4's 31 characters")
        _opt_price("stop_loss", self.stop_loss)
        _opt_price("take_profit", self.take_profit)


@dataclass(frozen=True, slots=True)
class CloseOrder:
    """Close ``lot_size`` lots of the exact slave ``ticket`` (all of it for a full close)."""

    command_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    lot_size: float
    magic_number: int
    attempt: int = 1

    def __post_init__(self) -> None:
        _numbers(self)
        _attempt(self.attempt)
        parse_command_id(self.command_id)
        _trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        _symbol(self.symbol)
        _finite_pos("lot_size", self.lot_size)
        parse_magic(self.magic_number)


@dataclass(frozen=True, slots=True)
class ModifyOrder:
    command_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    stop_loss: float | None = None
    take_profit: float | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        _numbers(self)
        _attempt(self.attempt)
        parse_command_id(self.command_id)
        _trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        _symbol(self.symbol)
        _opt_price("stop_loss", self.stop_loss)
        _opt_price("take_profit", self.take_profit)


Command = ExecuteOrder | CloseOrder | ModifyOrder


# ------------------------------------------------------------------------------------------ slave -> core


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
        _numbers(self)
        parse_command_id(self.command_id)
        _trade_ids(self.trade_id, self.trace_id)
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
        _numbers(self)
        parse_command_id(self.command_id)
        _trade_ids(self.trade_id, self.trace_id)
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
        _numbers(self)
        parse_command_id(self.command_id)
        _trade_ids(self.trade_id, self.trace_id)
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
        _numbers(self)
        parse_command_id(self.command_id)
        parse_trace_id(self.trace_id)


# ----------------------------------------------------------------------------------------- market / state


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: float
    ask: float
    time_ms: int

    def __post_init__(self) -> None:
        _numbers(self)
        _symbol(self.symbol)
        _finite_pos("bid", self.bid)
        _finite_pos("ask", self.ask)
        if self.ask < self.bid:
            raise ValueError(f"{self.symbol}: ask {self.ask} below bid {self.bid}")


@dataclass(frozen=True, slots=True)
class Quotes:
    quotes: list[Quote]

    def __post_init__(self) -> None:
        _numbers(self)


@dataclass(frozen=True, slots=True)
class Position:
    ticket: int
    symbol: str
    side: Side
    lots: float
    open_price: float
    magic_number: int
    comment: str = ""
    stop_loss: float | None = None
    take_profit: float | None = None
    open_time_ms: int | None = None
    profit: float = 0.0

    def __post_init__(self) -> None:
        _numbers(self)


@dataclass(frozen=True, slots=True)
class TickValue:
    symbol: str
    tick_value: float

    def __post_init__(self) -> None:
        _numbers(self)


class CloseReason(enum.Enum):
    """Why the broker closed a position that no Echo command closed."""

    SL = "SL"
    TP = "TP"
    STOP_OUT = "STOP_OUT"
    OTHER = "OTHER"
    """Closed by hand or by another EA."""


@dataclass(frozen=True, slots=True)
class ClosedPosition:
    """A position of this EA's magic number that was closed without an Echo command (from the account
    history: MT4 marks SL/TP closes with ``[sl]`` / ``[tp]`` and stop-outs with ``so:`` in the comment)."""

    ticket: int
    symbol: str
    lots: float
    close_price: float
    closed_at_ms: int
    reason: CloseReason

    def __post_init__(self) -> None:
        _numbers(self)
        parse_ticket(self.ticket)


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    balance: float
    equity: float
    margin: float
    free_margin: float
    currency: str
    leverage: int
    positions: list[Position] = field(default_factory=list)
    tick_values: list[TickValue] = field(default_factory=list)
    recent_closes: list[ClosedPosition] = field(default_factory=list)
    """Positions the broker closed in the last 24 hours without an Echo command (at most 50, newest
    first); repeated in every snapshot, so a lost line loses nothing."""

    def __post_init__(self) -> None:
        _numbers(self)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    seq: int = 0

    def __post_init__(self) -> None:
        _numbers(self)


# --------------------------------------------------------------------------------------- agent -> EA misc


class RegistrationStatus(enum.Enum):
    ACCEPTED = "ACCEPTED"
    WARNING = "WARNING"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class RegistrationIssue:
    code: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _numbers(self)


@dataclass(frozen=True, slots=True)
class SymbolRegistrationEntry:
    canonical_symbol: str
    broker_symbol: str
    status: RegistrationStatus
    warnings: list[RegistrationIssue] = field(default_factory=list)
    errors: list[RegistrationIssue] = field(default_factory=list)
    spec_age_ms: int = 0
    evaluated_at_ms: int = 0

    def __post_init__(self) -> None:
        _numbers(self)


@dataclass(frozen=True, slots=True)
class SymbolRegistrationResult:
    account_id: str
    pipe_role: Role
    protocol_version: int
    agent_id: str
    core_version: str
    status: RegistrationStatus
    evaluated_at_ms: int
    evaluation_id: str
    errors: list[RegistrationIssue] = field(default_factory=list)
    warnings: list[RegistrationIssue] = field(default_factory=list)
    symbols: list[SymbolRegistrationEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        _numbers(self)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    ack_timeout_ms: int
    retry_backoff_ms: int
    max_retries: int
    heartbeat_interval_ms: int

    def __post_init__(self) -> None:
        _numbers(self)
        for name in ("ack_timeout_ms", "retry_backoff_ms", "max_retries", "heartbeat_interval_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The ``error`` message: names the problem with a line that could not be accepted."""

    code: str
    message: str
    ref_type: str | None = None

    def __post_init__(self) -> None:
        _numbers(self)


# ------------------------------------------------------------------------- Core <-> Agent transport units


FromEA = (
    TradeIntent
    | TradeClose
    | TradeModify
    | ExecutionResult
    | CloseResult
    | ModifyResult
    | Quotes
    | StateSnapshot
    | PipeDeliveryAck
)
ToEA = ExecuteOrder | CloseOrder | ModifyOrder | TradeIntentAck | SymbolRegistrationResult | DeliveryConfig


@dataclass(frozen=True, slots=True)
class AccountOnline:
    """Agent -> Core: an EA completed its handshake on this agent."""

    agent_id: str
    handshake: Handshake
    at_ms: int


@dataclass(frozen=True, slots=True)
class AccountOffline:
    agent_id: str
    account_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class FromAccount:
    """Agent -> Core: a message an EA sent, tagged with the account of its connection."""

    account_id: str
    message: FromEA
    received_ms: int


class AckStage(enum.Enum):
    """How far the Agent got a command (seed 000 section 7; CORE_ACCEPTED and EA_CONFIRMED are Core's)."""

    AGENT_BUFFERED = "AGENT_BUFFERED"
    PIPE_DELIVERED = "PIPE_DELIVERED"


class AckResult(enum.Enum):
    PENDING = "PENDING"
    OK = "OK"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class CommandAck:
    """Agent -> Core: a command reached a stage on the Agent's hop.

    ``AGENT_BUFFERED/PENDING``: the terminal is offline, the command waits in the Agent's ledger.
    ``AGENT_BUFFERED/FAILED``: the Agent could not get it acknowledged by the terminal and let go.
    ``PIPE_DELIVERED/OK``: the terminal acknowledged the line. ``PIPE_DELIVERED/FAILED``: it refused it."""

    account_id: str
    command_id: str
    stage: AckStage
    result: AckResult
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DropCommand:
    """Core -> Agent: Core gave up on this command; the Agent stops trying to deliver it."""

    account_id: str
    command_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ToAccount:
    """Core -> Agent: write ``message`` to the connection of ``account_id``."""

    account_id: str
    message: ToEA


@dataclass(frozen=True, slots=True)
class DeliveryHeartbeat:
    """Core -> Agent: the delivery settings now in force (sent when they change, and to every Agent that
    connects); the Agent passes them to its terminals as ``delivery_config``."""

    config: DeliveryConfig


AgentToCore = AccountOnline | AccountOffline | FromAccount | CommandAck
CoreToAgent = ToAccount | DeliveryHeartbeat | DropCommand
