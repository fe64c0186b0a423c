"""The Store port on PostgreSQL (psycopg 3), in its own schema (``echo`` unless the URL says
``?schema=NAME``).

psycopg has no trio support, so its synchronous connection runs in a worker thread
(``trio.to_thread.run_sync``) behind a limiter of one: one statement stream on one connection, in the order
the calls are made, as with SQLite. A write is one transaction; the rows of each part go in with
``executemany`` (psycopg pipelines them: one round trip per part, not per row). The same statements as
the SQLite store (``statements.py``), with ``%s`` placeholders, and the same errors: a key that exists or
appears twice, an unknown key in an update, an integer wider than 64 bits.

A lost connection is a StoreError for the call that met it; the next call connects again, so Core's
journal retries carry it across a server restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
import trio

from echo.adapters.store import statements as sql
from echo.adapters.store.migrations import discover, split_statements
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
    StoreUnavailable,
    SymbolEvaluationRow,
    TicketRow,
    TradeRow,
    TradeStatus,
)

_T = TypeVar("_T")
_CONNECT_TIMEOUT_S = 5
_MIGRATION_LOCK = 0x6563686F  # "echo": the advisory lock that serializes concurrent migrators


def _pg(statement: str) -> str:
    return statement.replace("?", "%s")


def split_url(url: str) -> tuple[str, str]:
    """(libpq conninfo URL without our ``schema`` parameter, the schema name)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "echo")
    if not schema.replace("_", "").isalnum() or not schema[0].isalpha():
        raise StoreError(f"schema must be a plain identifier, got {schema!r}")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def migrate(url: str, directory: str | None = None) -> list[str]:
    """Apply the pending migrations of ``sql/`` to the schema, in one transaction under an advisory lock
    (two migrators never interleave); return the versions applied now. Idempotent."""
    conninfo, schema = split_url(url)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            return _migrate(conn, schema, directory)
    except psycopg.Error as exc:
        raise StoreError(f"migration of {schema} failed: {exc}") from exc


def drop_schema(url: str) -> None:
    """Drop the URL's schema and everything in it, if it exists (a simulation's scratch store)."""
    conninfo, schema = split_url(url)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except psycopg.Error as exc:
        raise StoreError(f"cannot drop schema {schema}: {exc}") from exc


def _migrate(conn: psycopg.Connection[Any], schema: str, directory: str | None = None) -> list[str]:
    migrations = discover(directory)
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version TEXT NOT NULL PRIMARY KEY, applied_at_ms BIGINT)"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in split_statements(migration.sql()):
                conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (%s, %s)",
                (migration.version, time.time_ns() // 1_000_000),
            )
            applied.append(migration.version)
    return applied


class PostgresStore:
    """Build it with ``await PostgresStore.open(url)``: migrates the schema, then serves the Store port."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self._conninfo = conninfo
        self.schema = schema
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        conninfo, schema = split_url(url)
        store = cls(conninfo, schema)
        await store._call(lambda conn: _migrate(conn, schema))
        return store

    # --- plumbing -------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                options=f"-c search_path={self.schema}",
                application_name=f"echo-store-{self.schema}",
            )
        return self._conn

    def _sync(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        try:
            return fn(self._connection())
        except psycopg.OperationalError as exc:
            # the server went away or restarted: the next call connects again
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self._conn.close()
                self._conn = None
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}".strip()) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}".strip()) from exc

    async def _call(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        # abandon_on_cancel=False (the default): a write that started finishes, and its outcome is known
        return await trio.to_thread.run_sync(self._sync, fn, limiter=self._limiter)

    async def _rows(self, statement: str, params: tuple[Any, ...]) -> list[Any]:
        text = _pg(statement)
        return await self._call(lambda conn: conn.execute(text, params).fetchall())

    # --- writes ---------------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if batch:
            await self._call(lambda conn: self._write(conn, batch))

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        for step in sql.STEPS:
            for row in getattr(batch, step.part):
                sql.check_ints(step.part, row)
        for row in batch.journal:
            sql.check_ints("journal", row)
        for account in batch.accounts:
            sql.check_ints("accounts", account)
        failed: tuple[sql.Step, Sequence[Any], Exception] | None = None
        try:
            with conn.transaction(), conn.cursor() as cur:
                for step in sql.STEPS:
                    rows: Sequence[Any] = getattr(batch, step.part)
                    if not rows:
                        continue
                    try:
                        self._run(cur, step, rows)
                    except psycopg.errors.IntegrityError as exc:
                        failed = (step, rows, exc)
                        raise
                if batch.journal:
                    cur.executemany(_pg(sql.JOURNAL_UPSERT), [sql.JOURNAL_PARAMS(r) for r in batch.journal])
                if batch.accounts:
                    cur.executemany(_pg(sql.ACCOUNT_UPSERT), [sql.ACCOUNT_PARAMS(r) for r in batch.accounts])
        except psycopg.errors.IntegrityError as exc:
            if failed is not None:
                raise StoreError(self._explain(conn, *failed)) from exc
            raise StoreError(f"batch rejected: {exc}") from exc
        except psycopg.errors.NumericValueOutOfRange as exc:
            raise StoreError("batch rejected: an integer is outside the 64-bit range") from exc

    @staticmethod
    def _run(cur: psycopg.Cursor[Any], step: sql.Step, rows: Sequence[Any]) -> None:
        statement = _pg(step.sql if step.update else step.many[1])
        if not step.update:
            cur.executemany(statement, [step.params(r) for r in rows])
            return
        for row in rows:
            cur.execute(statement, step.params(row))
            if cur.rowcount != 1:
                raise StoreError(
                    f"batch rejected: {step.part}: no row with {sql.describe(step.key_names, step.key(row))}"
                )

    @staticmethod
    def _explain(conn: psycopg.Connection[Any], step: sql.Step, rows: Sequence[Any], cause: Exception) -> str:
        """Name the offending key of a failed insert, looked up in the state before the batch."""
        seen: set[tuple[Any, ...]] = set()
        exists = _pg(step.exists_sql)
        try:
            for row in rows:
                key = step.key(row)
                if key in seen:
                    return f"batch rejected: {step.part}: {sql.describe(step.key_names, key)} appears twice"
                if conn.execute(exists, key).fetchone() is not None:
                    return f"batch rejected: {step.part}: {sql.describe(step.key_names, key)} already exists"
                seen.add(key)
        except psycopg.Error:
            pass
        return f"batch rejected: {step.part}: {cause}"

    # --- reads ----------------------------------------------------------------------------------------

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

    async def purge_evaluations(self, before_ms: int) -> int:
        def purge(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                conn.execute("DELETE FROM symbol_registrations WHERE evaluated_at_ms < %s", (before_ms,))
                cur = conn.execute(
                    "DELETE FROM handshake_evaluations WHERE evaluated_at_ms < %s", (before_ms,)
                )
                return cur.rowcount

        return await self._call(purge)

    async def purge_closed_trades(self, before_ms: int, limit: int = 100) -> int:
        sql.check_limit(limit)

        def purge(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_pg(sql.PURGEABLE_TRADES), (before_ms, limit))
                gone = [(r[0],) for r in cur.fetchall()]
                for statement in sql.PURGE_TRADE if gone else ():
                    cur.executemany(_pg(statement), gone)
                return len(gone)

        return await self._call(purge)

    async def aclose(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)
