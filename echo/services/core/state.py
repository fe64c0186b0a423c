"""What Core holds in memory between messages: accounts, trades and their slave positions, the commands
awaiting a result, and how a command row keeps a command (``compact`` / ``command_of``). Plain data, no
I/O: the handlers in the engine modules change it, the shell persists what they record."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import msgspec

from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.copying import SlaveQuote
from echo.domain.ids import trade_comment
from echo.domain.types import Role, SymbolSpec
from echo.pipe.jsonenc import to_json
from echo.ports.store import CommandKind, CommandRow, TradeRow

_ROW_COLUMNS = frozenset({"command_id", "trade_id", "trace_id", "error_code"})
"""Message fields a command row keeps in its own columns: not repeated in its payload or result."""
_KEPT_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


_COMMAND_TYPES: dict[str, type[m.ExecuteOrder] | type[m.CloseOrder] | type[m.ModifyOrder]] = {
    "execute": m.ExecuteOrder,
    "close": m.CloseOrder,
    "modify": m.ModifyOrder,
}


def command_of(row: CommandRow) -> m.ExecuteOrder | m.CloseOrder | m.ModifyOrder:
    """A command as it was sent, from its row (the inverse of ``compact``): the payload leaves out what
    the row's columns hold, the fields at their default and the trade's order comment."""
    known = {"command_id": row.command_id, "trade_id": row.trade_id, "trace_id": row.trace_id}
    data = {"comment": trade_comment(row.trade_id)} if row.kind == "execute" else {}
    return msgspec.convert(
        {**data, **msgspec.json.decode(row.payload), **known}, type=_COMMAND_TYPES[row.kind]
    )


def compact(msg: Any, comment: str = "") -> str:
    """A command or a result as its command row keeps it: JSON without the fields the row's columns hold,
    without the fields at their default and without the trade's own order ``comment`` (recovery puts
    them back)."""
    kept = _KEPT_FIELDS.get(type(msg))
    if kept is None:
        kept = _KEPT_FIELDS[type(msg)] = tuple(
            (f.name, f.default) for f in fields(msg) if f.name not in _ROW_COLUMNS
        )
    return to_json(
        {
            name: value
            for name, default in kept
            if (value := getattr(msg, name)) != (comment if name == "comment" else default)
        }
    )


@dataclass
class Account:
    account_id: str
    role: Role
    agent_id: str
    online: bool
    handshake: m.Handshake
    symbols: dict[str, SymbolSpec] = field(default_factory=dict)
    quotes: dict[str, SlaveQuote] = field(default_factory=dict)
    """broker symbol -> latest quote, stamped with Core's receive time."""
    snapshot: m.StateSnapshot | None = None
    tick_values: dict[str, float] = field(default_factory=dict)
    """broker symbol -> money per tick per lot, from the latest state snapshot that reported it."""
    tick_values_at_ms: int | None = None
    broker_closes_handled: set[int] = field(default_factory=set)
    """Tickets of ``recent_closes`` already applied (the snapshot repeats them for 24 hours)."""
    stops_waiting: set[str] = field(default_factory=set)
    """Trades whose stops this broker refused after the fill: tried again once a quote allows them."""
    registration: m.RegistrationStatus = m.RegistrationStatus.ACCEPTED
    """Core's verdict on the last handshake: REJECTED blocks every command to the account."""
    rejected_symbols: dict[str, str] = field(default_factory=dict)
    """canonical -> why this account may not trade it."""
    reported_at_ms: int = 0
    """When the Agent received the handshake this state comes from (an older report is ignored)."""


@dataclass
class Op:
    kind: CommandKind
    fraction: float = 1.0
    """close: share of the position to close (1.0 = all)."""
    stop_loss: float | None = None
    take_profit: float | None = None
    event_id: str | None = None
    exact: bool = False
    """modify: the prices are the slave's already (stops set after the fill), not the master's."""


@dataclass
class SlavePosition:
    account_id: str
    broker_symbol: str
    spec: SymbolSpec | None
    """None after a restart until the slave's handshake says what its broker's symbol looks like."""
    tickets: dict[int, float] = field(default_factory=dict)
    """open slave tickets -> lots."""
    in_flight: set[str] = field(default_factory=set)
    queue: deque[Op] = field(default_factory=deque)
    opened: bool = False
    failed: bool = False
    after_fill: tuple[float | None, float | None] | None = None
    """Stops the broker's StopLevel kept off the order: set by a modify once it fills."""
    after_fill_command: str | None = None
    """The modify that sets ``after_fill`` stops, while it is out."""
    closed_by_broker: str | None = None
    """SL, TP or STOP_OUT: the slave's broker closed the position on its own; it is never reopened."""
    entry_price: float | None = None
    """The slave's fill price (the master's entry stands in after a restart): a catastrophic SL is set
    from it when a master modification leaves no SL."""


@dataclass
class Trade:
    row: TradeRow
    intent: m.TradeIntent
    canonical: str
    positions: dict[str, SlavePosition] = field(default_factory=dict)
    events_seen: set[str] = field(default_factory=set)
    closed: bool = False
    comment: str = ""
    """The order comment stamped on every slave order of this trade (carries the trade_id)."""
    done_commands: set[str] = field(default_factory=set)
    """Commands of this trade already answered: a repeated answer is expected, not an anomaly. Forgotten
    with the trade (a result for a trade that is gone and still known for dedupe is a repeat too)."""


_NEW_COMMAND = delivery.Command()
"""A new command's delivery state: immutable, so one serves every command."""


@dataclass
class Pending:
    command: m.Command
    kind: CommandKind
    account_id: str
    trade_id: str
    state: delivery.Command = _NEW_COMMAND
    """Where its delivery stands."""


@dataclass
class State:
    """Everything Core remembers between messages."""

    accounts: dict[str, Account] = field(default_factory=dict)
    trades: dict[str, Trade] = field(default_factory=dict)
    """Trades open at the master or with slave work left (a closed, idle trade is forgotten)."""
    seen_trade_ids: set[str] = field(default_factory=set)
    """Trades handled within the dedupe window (pruned by ``master.prune``)."""
    pending: dict[str, Pending] = field(default_factory=dict)
    """Commands awaiting their result, by command_id."""
    given_up: dict[str, Pending] = field(default_factory=dict)
    """Commands that got no result after every send: a late result is still applied."""
    claims: dict[str, tuple[str, m.AccountOnline]] = field(default_factory=dict)
    """account_id -> (agent_id, its announcement refused while the owner served the account): taken up
    when the owner lets the account go offline, dropped when that Agent lets it go first."""
    pruned_at_ms: int = 0
