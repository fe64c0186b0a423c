"""The store's SQL, written once for SQLite and PostgreSQL: the columns of each row type, the statements
of each part of a batch (in the order a write runs them), the reads, the upserts, and the naming of a key
an insert conflicts on. Statements use ``?`` placeholders; the PostgreSQL store turns them into ``%s``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from echo.ports.store import (
    AccountRow,
    CommandRow,
    CommandUpdate,
    DecisionRow,
    EvaluationRow,
    EventRow,
    JournalRow,
    RetryEventRow,
    StoreError,
    SymbolEvaluationRow,
    TicketRow,
    TicketUpdate,
    TradeRow,
    TradeUpdate,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT_FIELDS: dict[type, tuple[str, ...]] = {
    TradeRow: ("master_ticket", "magic_number", "opened_at_ms", "closed_at_ms"),
    TradeUpdate: ("closed_at_ms",),
    CommandRow: ("created_at_ms", "completed_at_ms"),
    CommandUpdate: ("completed_at_ms",),
    TicketRow: ("ticket", "opened_at_ms", "closed_at_ms", "parent_ticket"),
    TicketUpdate: ("ticket", "closed_at_ms"),
    DecisionRow: ("at_ms",),
    EventRow: ("at_ms",),
    JournalRow: ("attempt", "next_retry_at_ms", "updated_at_ms"),
    RetryEventRow: ("attempt", "at_ms"),
    AccountRow: ("updated_at_ms",),
    EvaluationRow: ("protocol_version", "evaluated_at_ms"),
    SymbolEvaluationRow: ("spec_age_ms", "evaluated_at_ms"),
}


def check_ints(part: str, row: object) -> None:
    """Integers are stored as 64-bit (BIGINT); a wider one is rejected, as SQLite and PostgreSQL reject it."""
    for name in INT_FIELDS[type(row)]:
        value = getattr(row, name)
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            raise StoreError(f"batch rejected: {part}: an integer is outside the 64-bit range")


def check_limit(limit: int) -> None:
    # SQL reads a negative LIMIT as "no limit" (SQLite) or refuses it (PostgreSQL): refuse it alike
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


CHUNK = 32
"""The most rows one INSERT statement carries: a longer part of a batch runs as several statements."""


def columns(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_type))


TRADE_COLS = columns(TradeRow)
TICKET_COLS = columns(TicketRow)
COMMAND_COLS = columns(CommandRow)
DECISION_COLS = columns(DecisionRow)
EVENT_COLS = columns(EventRow)
JOURNAL_COLS = columns(JournalRow)
RETRY_COLS = columns(RetryEventRow)
JOURNAL_UPSERT = (
    f"INSERT INTO delivery_journal ({', '.join(JOURNAL_COLS)})"
    f" VALUES ({', '.join('?' * len(JOURNAL_COLS))})"
    " ON CONFLICT (command_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in JOURNAL_COLS if c != "command_id")
)
JOURNAL_PARAMS = attrgetter(*JOURNAL_COLS)
EVALUATION_COLS = columns(EvaluationRow)
SYMBOL_EVALUATION_COLS = columns(SymbolEvaluationRow)
ACCOUNT_COLS = columns(AccountRow)
ACCOUNT_UPSERT = (
    f"INSERT INTO accounts ({', '.join(ACCOUNT_COLS)}) VALUES ({', '.join('?' * len(ACCOUNT_COLS))})"
    " ON CONFLICT (account_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ACCOUNT_COLS if c != "account_id")
)
ACCOUNT_PARAMS = attrgetter(*ACCOUNT_COLS)


def insert(table: str, cols: tuple[str, ...], rows: int = 1) -> str:
    """An INSERT of ``rows`` rows; of more than one, an ``INSERT OR ROLLBACK``. A row that breaks a
    constraint then ends the whole transaction (which the store rolls back anyway) rather than only the
    statement, with the same error, so SQLite keeps no statement journal for it: a copy of every page the
    statement changes, spilled to a temporary file past 64 KiB. A one-row INSERT keeps none either way."""
    values = f"({', '.join('?' * len(cols))})"
    verb = "INSERT INTO" if rows == 1 else "INSERT OR ROLLBACK INTO"
    return f"{verb} {table} ({', '.join(cols)}) VALUES {', '.join([values] * rows)}"


def select(table: str, cols: tuple[str, ...], tail: str) -> str:
    return f"SELECT {', '.join(cols)} FROM {table} {tail}"


@dataclass(frozen=True, slots=True)
class Step:
    """One part of a batch: the Batch field it reads, the statement it runs and how to explain a failure."""

    part: str
    """The Batch field name, also used in error messages."""
    sql: str
    """The statement for one row."""
    many: tuple[str, ...]
    """For an insert, ``many[n]`` inserts ``n`` rows (``1 <= n <= CHUNK``); empty for an update."""
    params: Callable[[Any], Any]
    key: Callable[[Any], Any]
    key_names: tuple[str, ...]
    update: bool
    exists_sql: str


def step(part: str, table: str, sql: str, param_names: tuple[str, ...], key_names: tuple[str, ...]) -> Step:
    where = " AND ".join(f"{k} = ?" for k in key_names)
    update = part.endswith("_updates")
    return Step(
        part=part,
        sql=sql,
        many=() if update else ("", *(insert(table, param_names, n) for n in range(1, CHUNK + 1))),
        params=attrgetter(*param_names),
        key=attrgetter(*key_names) if len(key_names) > 1 else lambda r: (getattr(r, key_names[0]),),
        key_names=key_names,
        update=update,
        exists_sql=f"SELECT 1 FROM {table} WHERE {where}",
    )


# In Batch field order: inserts of a kind come before its updates, so a batch may update what it inserts.
STEPS: tuple[Step, ...] = (
    step("trades", "trades", insert("trades", TRADE_COLS), TRADE_COLS, ("trade_id",)),
    step(
        "trade_updates",
        "trades",
        "UPDATE trades SET status = ?, closed_at_ms = ? WHERE trade_id = ?",
        ("status", "closed_at_ms", "trade_id"),
        ("trade_id",),
    ),
    step("commands", "commands", insert("commands", COMMAND_COLS), COMMAND_COLS, ("command_id",)),
    step(
        "command_updates",
        "commands",
        "UPDATE commands SET status = ?, error_code = ?, result = ?, completed_at_ms = ?"
        " WHERE command_id = ?",
        ("status", "error_code", "result", "completed_at_ms", "command_id"),
        ("command_id",),
    ),
    step(
        "tickets",
        "slave_tickets",
        insert("slave_tickets", TICKET_COLS),
        TICKET_COLS,
        ("account_id", "ticket"),
    ),
    step(
        "ticket_updates",
        "slave_tickets",
        "UPDATE slave_tickets SET status = ?, lots = ?, closed_at_ms = ? WHERE account_id = ? AND ticket = ?",
        ("status", "lots", "closed_at_ms", "account_id", "ticket"),
        ("account_id", "ticket"),
    ),
    step(
        "decisions",
        "copy_decisions",
        insert("copy_decisions", DECISION_COLS),
        DECISION_COLS,
        ("decision_id",),
    ),
    step("events", "events", insert("events", EVENT_COLS), EVENT_COLS, ("event_id",)),
    step(
        "retry_events",
        "delivery_retry_event",
        insert("delivery_retry_event", RETRY_COLS),
        RETRY_COLS,
        ("event_id",),
    ),
    step(
        "evaluations",
        "handshake_evaluations",
        insert("handshake_evaluations", EVALUATION_COLS),
        EVALUATION_COLS,
        ("evaluation_id",),
    ),
    step(
        "symbol_evaluations",
        "symbol_registrations",
        insert("symbol_registrations", SYMBOL_EVALUATION_COLS),
        SYMBOL_EVALUATION_COLS,
        ("evaluation_id", "broker_symbol"),
    ),
)

TRADE_BY_ID = select("trades", TRADE_COLS, "WHERE trade_id = ?")
TRADES_ALL = select("trades", TRADE_COLS, "ORDER BY opened_at_ms DESC, trade_id DESC LIMIT ?")
TRADES_BY_STATUS = select(
    "trades", TRADE_COLS, "WHERE status = ? ORDER BY opened_at_ms DESC, trade_id DESC LIMIT ?"
)
OPEN_TICKET_TRADES = (
    "SELECT DISTINCT trade_id FROM slave_tickets WHERE status = 'open' ORDER BY trade_id LIMIT ?"
)
TICKETS = select("slave_tickets", TICKET_COLS, "WHERE trade_id = ? ORDER BY account_id, opened_at_ms, ticket")
COMMANDS = select("commands", COMMAND_COLS, "WHERE trade_id = ? ORDER BY created_at_ms, command_id")
DECISIONS_ALL = select("copy_decisions", DECISION_COLS, "ORDER BY at_ms, decision_id LIMIT ?")
DECISIONS_BY_TRADE = select(
    "copy_decisions", DECISION_COLS, "WHERE trade_id = ? ORDER BY at_ms, decision_id LIMIT ?"
)
EVENTS_ALL = select("events", EVENT_COLS, "ORDER BY event_id LIMIT ?")
EVENTS_BY_TRADE = select("events", EVENT_COLS, "WHERE trade_id = ? ORDER BY event_id LIMIT ?")
JOURNAL_ALL = select("delivery_journal", JOURNAL_COLS, "ORDER BY updated_at_ms, command_id LIMIT ?")
JOURNAL_BY_OUTCOME = select(
    "delivery_journal", JOURNAL_COLS, "WHERE outcome = ? ORDER BY updated_at_ms, command_id LIMIT ?"
)
ACCOUNTS = select("accounts", ACCOUNT_COLS, "ORDER BY account_id")
EVALUATIONS_ALL = select(
    "handshake_evaluations", EVALUATION_COLS, "ORDER BY evaluated_at_ms DESC, evaluation_id DESC LIMIT ?"
)
EVALUATIONS_BY_ACCOUNT = select(
    "handshake_evaluations",
    EVALUATION_COLS,
    "WHERE account_id = ? ORDER BY evaluated_at_ms DESC, evaluation_id DESC LIMIT ?",
)
SYMBOL_EVALUATIONS = select(
    "symbol_registrations", SYMBOL_EVALUATION_COLS, "WHERE evaluation_id = ? ORDER BY broker_symbol"
)
RETRIES = select("delivery_retry_event", RETRY_COLS, "WHERE command_id = ? ORDER BY at_ms, event_id")


PURGEABLE_TRADES = (
    "SELECT trade_id FROM trades WHERE status = 'closed' AND closed_at_ms < ?"
    " AND NOT EXISTS (SELECT 1 FROM slave_tickets s WHERE s.trade_id = trades.trade_id AND s.status = 'open')"
    " AND NOT EXISTS (SELECT 1 FROM delivery_journal j WHERE j.trade_id = trades.trade_id"
    " AND j.outcome = 'PENDING')"
    " ORDER BY closed_at_ms, trade_id LIMIT ?"
)
"""Closed trades old enough to purge, with no slave work left (``trades_closed_idx`` finds them)."""
PURGE_TRADE = (
    "DELETE FROM delivery_retry_event"
    " WHERE command_id IN (SELECT command_id FROM commands WHERE trade_id = ?)",
    "DELETE FROM delivery_journal WHERE trade_id = ?",
    "DELETE FROM commands WHERE trade_id = ?",
    "DELETE FROM events WHERE trade_id = ?",
    "DELETE FROM copy_decisions WHERE trade_id = ?",
    "DELETE FROM slave_tickets WHERE trade_id = ?",
    "DELETE FROM trades WHERE trade_id = ?",
)
"""What a purged trade leaves, in this order (re-sends are found through the trade's commands)."""


def describe(key_names: tuple[str, ...], key: tuple[Any, ...]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in zip(key_names, key, strict=True))


def conflict(step: Step, rows: Sequence[Any], exists: Callable[[tuple[Any, ...]], bool]) -> str | None:
    """Why an insert of ``rows`` failed on its key: the first key that appears twice in ``rows`` or that
    ``exists`` finds in the state before the batch; None when neither."""
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        key = step.key(row)
        if key in seen:
            return f"batch rejected: {step.part}: {describe(step.key_names, key)} appears twice"
        if exists(key):
            return f"batch rejected: {step.part}: {describe(step.key_names, key)} already exists"
        seen.add(key)
    return None
