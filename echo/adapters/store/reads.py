"""The Store port's reads, written once for the SQL stores: each read runs its statement from
``statements.py`` through the store's ``_rows`` and maps the rows to the port's row types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from echo.adapters.store import statements as sql
from echo.ports.store import (
    AccountRow,
    CommandRow,
    DecisionRow,
    EvaluationRow,
    EventRow,
    JournalRow,
    RetryEventRow,
    SymbolEvaluationRow,
    TicketRow,
    TradeRow,
    TradeStatus,
)


class SqlReads(ABC):
    """The reads of a store whose ``_rows`` runs one statement (``?`` placeholders) and returns its rows."""

    @abstractmethod
    async def _rows(self, statement: str, params: tuple[Any, ...]) -> list[Any]: ...

    async def get_trade(self, trade_id: str) -> TradeRow | None:
        rows = await self._rows(sql.TRADE_BY_ID, (trade_id,))
        return TradeRow(*rows[0]) if rows else None

    async def trades(self, status: TradeStatus | None = None, limit: int = 1000) -> list[TradeRow]:
        sql.check_limit(limit)
        if status is None:
            rows = await self._rows(sql.TRADES_ALL, (limit,))
        else:
            rows = await self._rows(sql.TRADES_BY_STATUS, (status, limit))
        return [TradeRow(*r) for r in rows]

    async def tickets(self, trade_id: str) -> list[TicketRow]:
        return [TicketRow(*r) for r in await self._rows(sql.TICKETS, (trade_id,))]

    async def trades_with_open_tickets(self, limit: int = 1_000_000) -> list[str]:
        sql.check_limit(limit)
        return [r[0] for r in await self._rows(sql.OPEN_TICKET_TRADES, (limit,))]

    async def commands(self, trade_id: str) -> list[CommandRow]:
        return [CommandRow(*r) for r in await self._rows(sql.COMMANDS, (trade_id,))]

    async def decisions(self, trade_id: str | None = None, limit: int = 1000) -> list[DecisionRow]:
        sql.check_limit(limit)
        if trade_id is None:
            rows = await self._rows(sql.DECISIONS_ALL, (limit,))
        else:
            rows = await self._rows(sql.DECISIONS_BY_TRADE, (trade_id, limit))
        return [DecisionRow(*r) for r in rows]

    async def events(self, trade_id: str | None = None, limit: int = 1000) -> list[EventRow]:
        sql.check_limit(limit)
        if trade_id is None:
            rows = await self._rows(sql.EVENTS_ALL, (limit,))
        else:
            rows = await self._rows(sql.EVENTS_BY_TRADE, (trade_id, limit))
        return [EventRow(*r) for r in rows]

    async def journal(self, outcome: str | None = "PENDING", limit: int = 100_000) -> list[JournalRow]:
        sql.check_limit(limit)
        if outcome is None:
            rows = await self._rows(sql.JOURNAL_ALL, (limit,))
        else:
            rows = await self._rows(sql.JOURNAL_BY_OUTCOME, (outcome, limit))
        return [JournalRow(*r) for r in rows]

    async def retry_events(self, command_id: str) -> list[RetryEventRow]:
        return [RetryEventRow(*r) for r in await self._rows(sql.RETRIES, (command_id,))]

    async def accounts(self) -> list[AccountRow]:
        return [AccountRow(*r) for r in await self._rows(sql.ACCOUNTS, ())]

    async def evaluations(self, account_id: str | None = None, limit: int = 100) -> list[EvaluationRow]:
        sql.check_limit(limit)
        if account_id is None:
            rows = await self._rows(sql.EVALUATIONS_ALL, (limit,))
        else:
            rows = await self._rows(sql.EVALUATIONS_BY_ACCOUNT, (account_id, limit))
        return [EvaluationRow(*r) for r in rows]

    async def symbol_evaluations(self, evaluation_id: str) -> list[SymbolEvaluationRow]:
        return [SymbolEvaluationRow(*r) for r in await self._rows(sql.SYMBOL_EVALUATIONS, (evaluation_id,))]
