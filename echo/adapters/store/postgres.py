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

import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg.sql
import trio

from echo.adapters.locks import InUse
from echo.adapters.store import statements as sql
from echo.adapters.store.migrations import discover, split_statements
from echo.adapters.store.reads import SqlReads
from echo.ports.store import (
    Batch,
    StoreError,
    StoreUnavailable,
)

_T = TypeVar("_T")
_CONNECT_TIMEOUT_S = 5
_MIGRATION_LOCK = 0x6563686F  # "echo": the advisory lock that serializes concurrent migrators
_OWNER_LOCK = 0x65636F70
"""The class of the session advisory lock (``pg_try_advisory_lock(_OWNER_LOCK, hashtext(schema))``) that
the one copier of a schema holds on its own connection for as long as it runs."""


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


def migrate(url: str, directory: str | None = None, *, create_database: bool = True) -> list[str]:
    """Apply the pending migrations of ``sql/`` to the schema, in one transaction under an advisory lock
    (two migrators never interleave); return the versions applied now. Idempotent. A database that does
    not exist is created first (from the server's ``postgres`` database) unless ``create_database`` is
    False."""
    conninfo, schema = split_url(url)
    try:
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            if not (create_database and _no_database(exc)):
                raise
            create_database_of(conninfo)
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        with conn:
            return _migrate(conn, schema, directory)
    except psycopg.Error as exc:
        raise StoreError(f"migration of {schema} failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _no_database(exc: psycopg.OperationalError) -> bool:
    """Whether a failed connect failed because the database does not exist (SQLSTATE 3D000)."""
    return exc.sqlstate == "3D000" or ("database" in str(exc) and "does not exist" in str(exc))


def create_database_of(conninfo: str) -> str:
    """Create the database ``conninfo`` names, connected to the same server's ``postgres`` database;
    return its name. One that exists already (created meanwhile by another process) is fine."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    name = str(params.get("dbname") or params.get("user") or "")
    if not name:
        raise StoreError("the store URL names no database")
    maintenance = psycopg.conninfo.make_conninfo(conninfo, dbname="postgres")
    create = psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
    with (
        psycopg.connect(maintenance, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn,
        contextlib.suppress(psycopg.errors.DuplicateDatabase),  # created meanwhile by another process
    ):
        conn.execute(create)
    return name


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


class PostgresStore(SqlReads):
    """Build it with ``await PostgresStore.open(url)``: migrates the schema, then serves the Store port."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self._conninfo = conninfo
        self.schema = schema
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)
        self._owner: psycopg.Connection[Any] | None = None
        """With ``exclusive``: the connection that holds the schema's owner lock."""
        self._owns = False
        """The owner lock was taken: it is checked (and taken again) whenever the store reconnects."""

    @classmethod
    async def open(cls, url: str, *, exclusive: bool = False, create: bool = True) -> PostgresStore:
        """``exclusive``: this process is the schema's one copier while the store is open (a session
        advisory lock on a connection of its own; a second one gets InUse naming the first).
        ``create=False``: a schema that does not exist is an error, not a new empty store."""
        conninfo, schema = split_url(url)
        store = cls(conninfo, schema)
        try:
            if not create:
                found = await store._rows("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,))
                if not found:
                    raise StoreError(f"no store in schema {schema} of {store._where()}")
            if exclusive:
                await store._call(lambda conn: store._take_owner_lock())
            await store._call(lambda conn: _migrate(conn, schema))
        except BaseException:
            with trio.CancelScope(shield=True):
                await store.aclose()
            raise
        return store

    def _where(self) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self._conninfo)
        return f"database {params.get('dbname', '')} at {params.get('host', '')}:{params.get('port', 5432)}"

    def _take_owner_lock(self) -> None:
        """Hold the schema's owner lock on a connection of its own (worker thread)."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()
        me = f"echo-copier pid {os.getpid()} on {socket.gethostname()}"[:63]
        conn = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, application_name=me
        )
        try:
            (got,) = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_OWNER_LOCK, self.schema)
            ).fetchone() or (False,)
            if not got:
                raise InUse(
                    f"schema {self.schema} of {self._where()} is in use by another copier "
                    f"({self._holder(conn)})"
                )
        except BaseException:
            conn.close()
            raise
        self._owner = conn
        self._owns = True

    def _holder(self, conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = %s AND l.objid = hashtext(%s)::oid AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (_OWNER_LOCK, self.schema),
        ).fetchone()
        if row is None:
            return "its holder has just let go"
        pid, name, addr, since = row
        where = addr or "a local socket"
        return f"{name or 'a session'}, server pid {pid} from {where}, since {since:%Y-%m-%dT%H:%M:%S}"

    def _check_owner(self) -> None:
        """After the store connection was lost: the owner lock may have gone with the server; take it again
        (refused if another copier took it meanwhile)."""
        owner = self._owner
        try:
            if owner is not None and not owner.closed and not owner.broken:
                owner.execute("SELECT 1")
                return
        except psycopg.Error:
            pass
        try:
            self._take_owner_lock()
        except InUse as exc:
            raise StoreError(f"this copier lost its hold on the store: {exc}") from exc

    # --- plumbing -------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            if self._owns:
                self._check_owner()
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
                if not batch.sync:
                    # nothing waits on it: committed without waiting for the WAL flush, which the next
                    # synchronous commit (or the WAL writer, within wal_writer_delay) does
                    cur.execute("SET LOCAL synchronous_commit = off")
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
        exists = _pg(step.exists_sql)
        try:
            found = sql.conflict(step, rows, lambda key: conn.execute(exists, key).fetchone() is not None)
        except psycopg.Error:
            found = None
        if found is not None:
            return found
        return f"batch rejected: {step.part}: {cause}"

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
        owner, self._owner = self._owner, None
        if owner is not None:
            await trio.to_thread.run_sync(owner.close, limiter=self._limiter)
