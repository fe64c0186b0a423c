"""The Store port: trades, slave tickets, commands and their results, copy decisions and the
append-only event log. Every write goes through ``write(batch)``, one atomic transaction, so a fan-out
to N slaves costs one commit, not N."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

TradeStatus = Literal["open", "closed"]
CommandKind = Literal["execute", "close", "modify"]
CommandStatus = Literal["sent", "ok", "failed"]
TicketStatus = Literal["open", "closed"]
Decision = Literal["copy", "omit"]


class StoreError(Exception):
    """A store operation failed (the adapter's own errors are translated into this)."""


class StoreUnavailable(StoreError):
    """The store could not take the call now (server unreachable, disk full, I/O error, locked): the same
    call may succeed later. A batch refused for what it holds raises plain StoreError."""


@dataclass(frozen=True, slots=True)
class TradeRow:
    trade_id: str
    master_account: str
    master_ticket: int
    symbol: str
    """Canonical symbol."""
    master_symbol: str
    """The master broker's symbol."""
    side: str
    lot_size: float
    price: float
    magic_number: int
    trace_id: str
    opened_at_ms: int
    stop_loss: float | None = None
    take_profit: float | None = None
    status: TradeStatus = "open"
    closed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TradeUpdate:
    trade_id: str
    status: TradeStatus
    closed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CommandRow:
    command_id: str
    trade_id: str
    account_id: str
    kind: CommandKind
    trace_id: str
    payload: str
    """The command as sent (JSON)."""
    created_at_ms: int
    status: CommandStatus = "sent"
    error_code: str | None = None
    result: str | None = None
    """The result as received (JSON)."""
    completed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CommandUpdate:
    command_id: str
    status: CommandStatus
    error_code: str
    result: str
    completed_at_ms: int


@dataclass(frozen=True, slots=True)
class TicketRow:
    account_id: str
    ticket: int
    trade_id: str
    symbol: str
    """The slave broker's symbol."""
    lots: float
    opened_at_ms: int
    status: TicketStatus = "open"
    closed_at_ms: int | None = None
    parent_ticket: int | None = None
    """For a remainder after a partial close: the ticket it came from."""


@dataclass(frozen=True, slots=True)
class TicketUpdate:
    account_id: str
    ticket: int
    status: TicketStatus
    lots: float
    closed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """Why a slave got (or did not get) a copy of a trade: the copy receipt."""

    decision_id: str
    trade_id: str
    account_id: str
    decision: Decision
    reason: str
    """``copied`` or the omission reason (e.g. ``symbol_not_mapped``, ``slave_offline``)."""
    lot_size: float | None
    detail: str
    """JSON: how the size and symbol were chosen."""
    at_ms: int


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: str
    """UUIDv7: sorts by time."""
    at_ms: int
    kind: str
    trade_id: str | None = None
    account_id: str | None = None
    command_id: str | None = None
    trace_id: str | None = None
    data: str = "{}"


@dataclass(frozen=True, slots=True)
class JournalRow:
    """The delivery journal: where each command stands (``echo.delivery.machine.Command``). Written before
    the command leaves and after every change; a batch *upserts* it by command_id."""

    command_id: str
    trade_id: str
    account_id: str
    kind: CommandKind
    stage: str
    """CORE_ACCEPTED, AGENT_BUFFERED, PIPE_DELIVERED or EA_CONFIRMED."""
    outcome: str
    """PENDING, OK or FAILED."""
    attempt: int
    next_retry_at_ms: int | None
    last_error: str
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class RetryEventRow:
    """One re-send (or a give-up) of a command: why, and which attempt."""

    event_id: str
    command_id: str
    attempt: int
    reason: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class AccountRow:
    """The last handshake of an account (its role, agent and symbol specs), upserted by account_id, so a
    restarted Core still copies to a slave that has not reconnected yet."""

    account_id: str
    role: str
    agent_id: str
    handshake: str
    """The handshake payload as JSON."""
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """Core's verdict on one handshake (``symbol_registration_result``), globally."""

    evaluation_id: str
    account_id: str
    pipe_role: str
    status: str
    """ACCEPTED, WARNING or REJECTED."""
    protocol_version: int
    client_semver: str
    global_errors: str
    """JSON list of issues."""
    global_warnings: str
    evaluated_at_ms: int


@dataclass(frozen=True, slots=True)
class SymbolEvaluationRow:
    """One reported symbol's verdict within an evaluation."""

    evaluation_id: str
    canonical_symbol: str
    broker_symbol: str
    status: str
    warnings: str
    errors: str
    spec_age_ms: int
    evaluated_at_ms: int


@dataclass(slots=True)
class Batch:
    """One unit of work; written atomically by ``Store.write``."""

    trades: list[TradeRow] = field(default_factory=list)
    trade_updates: list[TradeUpdate] = field(default_factory=list)
    commands: list[CommandRow] = field(default_factory=list)
    command_updates: list[CommandUpdate] = field(default_factory=list)
    tickets: list[TicketRow] = field(default_factory=list)
    ticket_updates: list[TicketUpdate] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    journal: list[JournalRow] = field(default_factory=list)
    """Upserts by command_id: the last row for a command_id in the batch wins."""
    retry_events: list[RetryEventRow] = field(default_factory=list)
    accounts: list[AccountRow] = field(default_factory=list)
    """Upserts by account_id."""
    evaluations: list[EvaluationRow] = field(default_factory=list)
    symbol_evaluations: list[SymbolEvaluationRow] = field(default_factory=list)
    sync: bool = True
    """The write returns once the batch is on disk. False for a batch that nothing leaving Core waits on
    (a result heard, a delivery stage): a store may then commit it without waiting for the disk, as long
    as a later synced write makes it durable too (it survives the process dying; a power cut may lose
    it, as if Core had stopped before hearing it, and the peer that said it says it again)."""

    def __bool__(self) -> bool:
        return any(
            (
                self.trades,
                self.trade_updates,
                self.commands,
                self.command_updates,
                self.tickets,
                self.ticket_updates,
                self.decisions,
                self.events,
                self.journal,
                self.retry_events,
                self.accounts,
                self.evaluations,
                self.symbol_evaluations,
            )
        )


class Store(Protocol):
    async def write(self, batch: Batch) -> None:
        """Apply the batch atomically: all of it or none of it (then raise StoreError).
        Inserting a trade, command, ticket, decision or event whose key exists raises StoreError."""
        ...

    async def get_trade(self, trade_id: str) -> TradeRow | None: ...

    async def trades(self, status: TradeStatus | None = None, limit: int = 1000) -> list[TradeRow]:
        """Newest first."""
        ...

    async def tickets(self, trade_id: str) -> list[TicketRow]:
        """Ordered by (account_id, opened_at_ms, ticket)."""
        ...

    async def trades_with_open_tickets(self, limit: int = 1_000_000) -> list[str]:
        """trade_ids with at least one slave ticket still open (whatever the trade's own status), sorted."""
        ...

    async def commands(self, trade_id: str) -> list[CommandRow]:
        """Ordered by created_at_ms, then command_id."""
        ...

    async def decisions(self, trade_id: str | None = None, limit: int = 1000) -> list[DecisionRow]:
        """Ordered by at_ms, then decision_id."""
        ...

    async def events(self, trade_id: str | None = None, limit: int = 1000) -> list[EventRow]:
        """Oldest first (event_id order), at most ``limit``."""
        ...

    async def journal(self, outcome: str | None = "PENDING", limit: int = 100_000) -> list[JournalRow]:
        """Journal rows (all, or those with this outcome), ordered by updated_at_ms, then command_id."""
        ...

    async def retry_events(self, command_id: str) -> list[RetryEventRow]:
        """Ordered by at_ms, then event_id."""
        ...

    async def accounts(self) -> list[AccountRow]:
        """Every account that ever completed a handshake, ordered by account_id."""
        ...

    async def evaluations(self, account_id: str | None = None, limit: int = 100) -> list[EvaluationRow]:
        """Handshake evaluations, newest first (evaluated_at_ms, then evaluation_id, descending)."""
        ...

    async def symbol_evaluations(self, evaluation_id: str) -> list[SymbolEvaluationRow]:
        """The per-symbol verdicts of one evaluation, ordered by broker_symbol."""
        ...

    async def purge_evaluations(self, before_ms: int) -> int:
        """Delete evaluations (and their symbol rows) evaluated before ``before_ms``; returns how many
        evaluations went."""
        ...

    async def purge_closed_trades(self, before_ms: int, limit: int = 100) -> int:
        """Delete at most ``limit`` trades closed before ``before_ms`` (oldest first) that have no slave
        ticket open and no command pending in the delivery journal, with everything kept for them: slave
        tickets, commands, journal rows and re-sends, events and copy decisions. One transaction; returns
        how many trades went (fewer than ``limit``: nothing older is left to purge)."""
        ...

    async def aclose(self) -> None: ...
