"""An in-memory Store with the same semantics as the SQLite one: for tests and ``memory://``.

``write(batch)`` first checks the whole batch against the current state (keys that already exist, keys
that appear twice in the batch, updates of rows that do not exist), in the order the SQLite store runs
its statements, and only then applies it; so a rejected batch changes nothing and raises the same
StoreError message as the SQLite store would. Reads return the same orderings.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

import trio

from echo.adapters.store.statements import check_ints as _check_ints
from echo.adapters.store.statements import check_limit as _check_limit
from echo.ports.store import (
    AccountRow,
    Batch,
    CommandRow,
    DecisionRow,
    EvaluationRow,
    EventRow,
    JournalRow,
    RetryEventRow,
    StoreError,
    SymbolEvaluationRow,
    TicketRow,
    TradeRow,
    TradeStatus,
)

_R = TypeVar("_R")
_K = TypeVar("_K", bound=Hashable)


def _describe(names: tuple[str, ...], key: tuple[object, ...]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in zip(names, key, strict=True))


def _check_inserts(
    part: str,
    rows: Iterable[_R],
    key: Callable[[_R], _K],
    names: tuple[str, ...],
    describe_key: Callable[[_K], tuple[object, ...]],
    existing: Mapping[_K, object],
) -> set[_K]:
    """The keys a list of inserts adds; raise the first conflict, as SQLite meets it."""
    seen: set[_K] = set()
    for row in rows:
        _check_ints(part, row)
        k = key(row)
        if k in seen:
            raise StoreError(f"batch rejected: {part}: {_describe(names, describe_key(k))} appears twice")
        if k in existing:
            raise StoreError(f"batch rejected: {part}: {_describe(names, describe_key(k))} already exists")
        seen.add(k)
    return seen


def _check_updates(
    part: str,
    rows: Iterable[_R],
    key: Callable[[_R], _K],
    names: tuple[str, ...],
    describe_key: Callable[[_K], tuple[object, ...]],
    existing: Mapping[_K, object],
    inserted: set[_K],
) -> None:
    # SQLite binds (and range-checks) every update before it counts the rows they matched
    rows = list(rows)
    for row in rows:
        _check_ints(part, row)
    for row in rows:
        k = key(row)
        if k not in existing and k not in inserted:
            raise StoreError(f"batch rejected: {part}: no row with {_describe(names, describe_key(k))}")


def _drop(table: dict[_K, _R], gone: Callable[[_R], bool]) -> None:
    for key in [k for k, row in table.items() if gone(row)]:
        del table[key]


def _one(k: str) -> tuple[object, ...]:
    return (k,)


def _pair(k: tuple[str, int]) -> tuple[object, ...]:
    return k


class MemoryStore:
    """The Store port in memory. Rows are immutable, so reads hand out the stored objects themselves."""

    def __init__(self) -> None:
        self._trades: dict[str, TradeRow] = {}
        self._commands: dict[str, CommandRow] = {}
        self._tickets: dict[tuple[str, int], TicketRow] = {}
        self._decisions: dict[str, DecisionRow] = {}
        self._events: dict[str, EventRow] = {}
        self._journal: dict[str, JournalRow] = {}
        self._retry_events: dict[str, RetryEventRow] = {}
        self._accounts: dict[str, AccountRow] = {}
        self._evaluations: dict[str, EvaluationRow] = {}
        self._symbol_evaluations: dict[tuple[str, str], SymbolEvaluationRow] = {}
        self._closed = False

    def _live(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # --- writes ---------------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._live()
        if batch:
            self._validate(batch)
            self._apply(batch)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _validate(self, batch: Batch) -> None:
        """Raise the StoreError the SQLite store would raise for this batch, if any."""
        trade_id = ("trade_id",)
        command_id = ("command_id",)
        ticket_key = ("account_id", "ticket")
        new_trades = _check_inserts(
            "trades", batch.trades, lambda r: r.trade_id, trade_id, _one, self._trades
        )
        _check_updates(
            "trade_updates",
            batch.trade_updates,
            lambda u: u.trade_id,
            trade_id,
            _one,
            self._trades,
            new_trades,
        )
        new_commands = _check_inserts(
            "commands", batch.commands, lambda r: r.command_id, command_id, _one, self._commands
        )
        _check_updates(
            "command_updates",
            batch.command_updates,
            lambda u: u.command_id,
            command_id,
            _one,
            self._commands,
            new_commands,
        )
        new_tickets = _check_inserts(
            "tickets", batch.tickets, lambda r: (r.account_id, r.ticket), ticket_key, _pair, self._tickets
        )
        _check_updates(
            "ticket_updates",
            batch.ticket_updates,
            lambda u: (u.account_id, u.ticket),
            ticket_key,
            _pair,
            self._tickets,
            new_tickets,
        )
        _check_inserts(
            "decisions", batch.decisions, lambda r: r.decision_id, ("decision_id",), _one, self._decisions
        )
        _check_inserts("events", batch.events, lambda r: r.event_id, ("event_id",), _one, self._events)
        for row in batch.journal:  # upserts: only the range of their integers can be wrong
            _check_ints("journal", row)
        for account in batch.accounts:
            _check_ints("accounts", account)
        _check_inserts(
            "retry_events", batch.retry_events, lambda r: r.event_id, ("event_id",), _one, self._retry_events
        )
        _check_inserts(
            "evaluations",
            batch.evaluations,
            lambda r: r.evaluation_id,
            ("evaluation_id",),
            _one,
            self._evaluations,
        )
        _check_inserts(
            "symbol_evaluations",
            batch.symbol_evaluations,
            lambda r: (r.evaluation_id, r.broker_symbol),
            ("evaluation_id", "broker_symbol"),
            lambda k: k,
            self._symbol_evaluations,
        )

    def _apply(self, batch: Batch) -> None:
        for trade in batch.trades:
            self._trades[trade.trade_id] = trade
        for tu in batch.trade_updates:
            self._trades[tu.trade_id] = replace(
                self._trades[tu.trade_id], status=tu.status, closed_at_ms=tu.closed_at_ms
            )
        for command in batch.commands:
            self._commands[command.command_id] = command
        for cu in batch.command_updates:
            self._commands[cu.command_id] = replace(
                self._commands[cu.command_id],
                status=cu.status,
                error_code=cu.error_code,
                result=cu.result,
                completed_at_ms=cu.completed_at_ms,
            )
        for ticket in batch.tickets:
            self._tickets[(ticket.account_id, ticket.ticket)] = ticket
        for ku in batch.ticket_updates:
            key = (ku.account_id, ku.ticket)
            self._tickets[key] = replace(
                self._tickets[key], status=ku.status, lots=ku.lots, closed_at_ms=ku.closed_at_ms
            )
        for decision in batch.decisions:
            self._decisions[decision.decision_id] = decision
        for event in batch.events:
            self._events[event.event_id] = event
        for row in batch.journal:
            self._journal[row.command_id] = row
        for retry in batch.retry_events:
            self._retry_events[retry.event_id] = retry
        for account in batch.accounts:
            self._accounts[account.account_id] = account
        for evaluation in batch.evaluations:
            self._evaluations[evaluation.evaluation_id] = evaluation
        for sym in batch.symbol_evaluations:
            self._symbol_evaluations[(sym.evaluation_id, sym.broker_symbol)] = sym

    # --- reads ----------------------------------------------------------------------------------------

    async def get_trade(self, trade_id: str) -> TradeRow | None:
        await trio.lowlevel.checkpoint()
        self._live()
        return self._trades.get(trade_id)

    async def trades(self, status: TradeStatus | None = None, limit: int = 1000) -> list[TradeRow]:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [t for t in self._trades.values() if status is None or t.status == status]
        rows.sort(key=lambda t: (t.opened_at_ms, t.trade_id), reverse=True)
        return rows[:limit]

    async def trades_with_open_tickets(self, limit: int = 1_000_000) -> list[str]:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        return sorted({t.trade_id for t in self._tickets.values() if t.status == "open"})[:limit]

    async def tickets(self, trade_id: str) -> list[TicketRow]:
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [t for t in self._tickets.values() if t.trade_id == trade_id]
        rows.sort(key=lambda t: (t.account_id, t.opened_at_ms, t.ticket))
        return rows

    async def commands(self, trade_id: str) -> list[CommandRow]:
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [c for c in self._commands.values() if c.trade_id == trade_id]
        rows.sort(key=lambda c: (c.created_at_ms, c.command_id))
        return rows

    async def decisions(self, trade_id: str | None = None, limit: int = 1000) -> list[DecisionRow]:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [d for d in self._decisions.values() if trade_id is None or d.trade_id == trade_id]
        rows.sort(key=lambda d: (d.at_ms, d.decision_id))
        return rows[:limit]

    async def events(self, trade_id: str | None = None, limit: int = 1000) -> list[EventRow]:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [e for e in self._events.values() if trade_id is None or e.trade_id == trade_id]
        rows.sort(key=lambda e: e.event_id)
        return rows[:limit]

    async def journal(self, outcome: str | None = "PENDING", limit: int = 100_000) -> list[JournalRow]:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [j for j in self._journal.values() if outcome is None or j.outcome == outcome]
        rows.sort(key=lambda j: (j.updated_at_ms, j.command_id))
        return rows[:limit]

    async def retry_events(self, command_id: str) -> list[RetryEventRow]:
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [r for r in self._retry_events.values() if r.command_id == command_id]
        rows.sort(key=lambda r: (r.at_ms, r.event_id))
        return rows

    async def accounts(self) -> list[AccountRow]:
        await trio.lowlevel.checkpoint()
        self._live()
        return sorted(self._accounts.values(), key=lambda a: a.account_id)

    async def evaluations(self, account_id: str | None = None, limit: int = 100) -> list[EvaluationRow]:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [e for e in self._evaluations.values() if account_id is None or e.account_id == account_id]
        rows.sort(key=lambda e: (e.evaluated_at_ms, e.evaluation_id), reverse=True)
        return rows[:limit]

    async def symbol_evaluations(self, evaluation_id: str) -> list[SymbolEvaluationRow]:
        await trio.lowlevel.checkpoint()
        self._live()
        rows = [r for (e, _), r in self._symbol_evaluations.items() if e == evaluation_id]
        rows.sort(key=lambda r: r.broker_symbol)
        return rows

    async def purge_evaluations(self, before_ms: int) -> int:
        await trio.lowlevel.checkpoint()
        self._live()
        old = {k for k, e in self._evaluations.items() if e.evaluated_at_ms < before_ms}
        for k in old:
            del self._evaluations[k]
        for key in [k for k, r in self._symbol_evaluations.items() if r.evaluated_at_ms < before_ms]:
            del self._symbol_evaluations[key]
        return len(old)

    async def purge_closed_trades(self, before_ms: int, limit: int = 100) -> int:
        _check_limit(limit)
        await trio.lowlevel.checkpoint()
        self._live()
        busy = {t.trade_id for t in self._tickets.values() if t.status == "open"}
        busy |= {j.trade_id for j in self._journal.values() if j.outcome == "PENDING"}
        old = sorted(
            (t.closed_at_ms, t.trade_id)
            for t in self._trades.values()
            if t.status == "closed"
            and t.closed_at_ms is not None
            and t.closed_at_ms < before_ms
            and t.trade_id not in busy
        )
        gone = {trade_id for _, trade_id in old[:limit]}
        if not gone:
            return 0
        commands = {k for k, c in self._commands.items() if c.trade_id in gone}
        _drop(self._retry_events, lambda r: r.command_id in commands)
        _drop(self._journal, lambda r: r.trade_id in gone)
        _drop(self._commands, lambda r: r.trade_id in gone)
        _drop(self._events, lambda r: r.trade_id in gone)
        _drop(self._decisions, lambda r: r.trade_id in gone)
        _drop(self._tickets, lambda r: r.trade_id in gone)
        _drop(self._trades, lambda r: r.trade_id in gone)
        return len(gone)

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()
