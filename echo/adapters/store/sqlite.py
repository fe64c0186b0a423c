"""The durable Store: one SQLite file in WAL mode.

``write(batch)`` is the copier's hot path: one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch, over cached
prepared statements. The rows of each kind go in as one multi-row ``INSERT`` (up to ``sql.CHUNK`` rows a
statement: SQLite's fixed cost per statement is about that of a row, so this does a fan-out's 47 rows in
four statements instead of 47), the updates as one ``executemany``.

While the copier is busy, the commit of a batch that waits for the disk runs in a worker thread
(``trio.to_thread``): its fsync (0.2 ms to several ms) leaves the event loop free, so the Agent keeps
reading and writing the terminals' pipes and Core keeps applying what arrives, which the next write then
commits as one batch (``bench_load``: at 960 slave orders/s 923/s delivered instead of 542/s). An idle
copier commits inline, since waking the thread costs 50 us to several hundred; so do the statements before
a commit (CPU work, about twice as slow in another thread) and a commit that does not wait for the disk.
One call at a time uses the connection (a lock); on trio's ``MockClock`` everything runs inline, so virtual
time does not jump while the disk works.

WAL checkpoints (copying committed pages from the WAL into the database file, with fsyncs of their own)
are off the commit path too: instead of SQLite's automatic checkpoint, which runs inside the commit that
fills 1,000 pages of WAL and makes that one copy wait, a ``PASSIVE`` checkpoint runs in a thread of its own on
a second connection at most once a second after writes, alongside the writes (WAL allows a checkpoint and a
writer at once).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import structlog
import trio
import trio.testing

from echo.adapters.locks import FileLock, parent_folder
from echo.adapters.store import statements as sql
from echo.adapters.store.migrations import apply_sqlite
from echo.adapters.store.reads import SqlReads
from echo.ports.store import (
    Batch,
    StoreError,
    StoreUnavailable,
)

log = structlog.get_logger("echo.store")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_BUSY_TIMEOUT_MS = 5000
_BUSY_WITHIN_S = 0.002
"""A write that starts within this long of the last one's end finds the copier busy (``_aside``)."""
_CACHED_STATEMENTS = 256
"""Room for an INSERT of each size up to ``sql.CHUNK`` for every table, plus the other statements."""

# sqlite3 binds an exact int, float, str or bytearray directly but sends any other parameter, None
# included, through its adapter registry, and for None that lookup misses and then builds (and drops)
# an AttributeError: about 0.5 us per NULL, some 50 times in a fan-out batch (6% of the instructions its
# write spends in sqlite3). An adapter for NoneType that returns None turns the miss into a hit; the value
# bound is NULL as before. The registry is process-wide: this holds for every sqlite3 user in the process,
# with the same result.
_NOTHING: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NOTHING.get)


def _flat(step: sql.Step, rows: Sequence[Any]) -> tuple[Any, ...] | None:
    """The parameters of ``step.many[len(rows)]``, or None to insert ``rows`` one at a time: a single row,
    or objects that are not rows of the step's type (the row-by-row insert then fails as it always has)."""
    if len(rows) == 1:
        return None
    try:
        return tuple(chain.from_iterable(map(step.params, rows)))
    except Exception:
        return None


_BIND_ERRORS = (OverflowError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
"""What sqlite3 raises for a parameter it cannot bind, before the statement runs."""


class _Rejected(Exception):
    """Raised inside a write to abort it; carries what is needed to explain the failure after rollback."""

    def __init__(self, step: sql.Step, rows: Sequence[Any], cause: Exception) -> None:
        super().__init__(str(cause))
        self.step = step
        self.rows = rows
        self.cause = cause


def _not_written(exc: BaseException) -> StoreError:
    """What a write that failed with ``exc`` raises: StoreUnavailable for an error of the database file."""
    if _unavailable(exc):
        return StoreUnavailable(f"batch not written: {exc}")
    return StoreError(f"batch rejected: {exc}")


def _unavailable(exc: BaseException) -> bool:
    """An error of the database file, not of the batch (disk full, I/O error, locked, read-only): the same
    batch may be written later. A bad value or a key that exists is an IntegrityError or a bind error."""
    return isinstance(exc, sqlite3.OperationalError)


class SqliteStore(SqlReads):
    """The Store port on one SQLite file. Build it with ``SqliteStore.open(path)``."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path | None = None, lock: FileLock | None = None
    ) -> None:
        """Wrap a connection that is already configured and migrated (``open`` does both)."""
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._lock = lock
        level = _SYNCHRONOUS[int(conn.execute("PRAGMA synchronous").fetchone()[0])]
        self._synced: str | None = level if level in ("FULL", "EXTRA") else None
        """The configured level when commits wait for the disk (FULL or EXTRA), else None."""
        self._lazy = False
        """The connection is at ``synchronous = NORMAL`` for a batch that nothing waits on."""
        self._busy = trio.Lock()
        """Held by the call using the connection (a write may be in a worker thread)."""
        self._written_at = -math.inf
        """When the last write ended (``time.monotonic``)."""
        self._checkpointer: sqlite3.Connection | None = None
        """The second connection, used only by the checkpoint thread (opened by its first checkpoint)."""
        self.checkpoint_every_s = 1.0
        """At most this often, after writes, a checkpoint runs beside them (``_checkpoint_soon``)."""
        self._checkpointed_at = -math.inf
        self._checkpoint_idle = threading.Event()
        self._checkpoint_idle.set()
        self.checkpoint_error: str | None = None
        """Why the last background checkpoint failed (the next one tries again; the WAL grows meanwhile)."""

    @classmethod
    def open(
        cls, path: str | Path, *, synchronous: str = "FULL", exclusive: bool = False, create: bool = True
    ) -> SqliteStore:
        """Open (creating if needed) the database at ``path``: WAL journal, the given ``synchronous``
        level (``FULL``: every commit is on disk; ``NORMAL``: a power cut may lose the last commits, never
        corrupt), foreign keys off, a busy timeout, and every pending migration applied.

        Its folder must exist (only the default ``var/`` is created). ``exclusive``: this process is the
        store's one copier while it keeps the store open (``PATH.lock``; a second one gets InUse naming
        the first). ``create=False``: a file that does not exist is an error, not a new empty store."""
        level = synchronous.upper()
        if level not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}")
        db_path = Path(path)
        if not create and not db_path.is_file():
            raise StoreError(f"no store at {db_path} (the file does not exist)")
        parent_folder(db_path, "the store", StoreError)
        lock = FileLock(f"{db_path}.lock", f"the store {db_path}") if exclusive else None
        if lock is not None:
            lock.acquire()
        try:
            conn = sqlite3.connect(
                db_path,
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                cached_statements=_CACHED_STATEMENTS,
                check_same_thread=False,  # writes run in a worker thread, one call at a time (``_busy``)
            )
        except (OSError, sqlite3.Error) as exc:
            if lock is not None:
                lock.release()
            raise StoreError(f"cannot open the store at {db_path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot put {db_path} in WAL mode (journal_mode is {mode})")
            conn.execute(f"PRAGMA synchronous = {level}")
            conn.execute("PRAGMA foreign_keys = OFF")
            apply_sqlite(conn)
        except BaseException as exc:
            conn.close()
            if lock is not None:
                lock.release()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the store at {db_path}: {exc}") from exc
            raise
        return cls(conn, db_path, lock)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    # --- writes ---------------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._live()
        if batch:
            async with self._busy:
                self._write(batch, commit=False)
                virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
                try:
                    if not virtual and self._aside(batch):
                        # it ends, committed or rolled back, whatever is cancelled meanwhile
                        with trio.CancelScope(shield=True):
                            await trio.to_thread.run_sync(self._commit, self._live())
                    else:
                        self._commit(self._live())
                finally:
                    self._written_at = time.monotonic()
                if not virtual:
                    self._checkpoint_soon()
        # once committed, a cancellation must not make the caller believe the write failed
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _aside(self, batch: Batch) -> bool:
        """Whether to commit ``batch`` in a worker thread: its commit waits for the disk and the copier is
        busy (other tasks ready to run, or this write follows the last one within ``_BUSY_WITHIN_S``). An
        idle copier commits inline: waking the worker costs 50 us on a quiet machine and several hundred
        on a busy one, with nothing for the loop to do meanwhile."""
        if self._synced is None or not batch.sync:
            return False
        return (
            time.monotonic() - self._written_at < _BUSY_WITHIN_S
            or trio.lowlevel.current_statistics().tasks_runnable > 0
        )

    def _write(self, batch: Batch, *, commit: bool = True) -> None:
        """The batch in one transaction; with ``commit=False`` the transaction is left open, every row in
        it, for ``_commit``. A failure rolls back and raises StoreError (StoreUnavailable for an error of
        the database file rather than of the batch)."""
        conn = self._live()
        if self._synced is not None:
            self._durability(conn, self._synced, lazy=not batch.sync)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot begin a transaction: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot begin a transaction: {exc}") from exc
        try:
            for step in sql.STEPS:
                rows: Sequence[Any] = getattr(batch, step.part)
                if rows:
                    self._run(conn, step, rows)
            if batch.journal:
                # upserts in batch order: the last row for a command_id wins
                conn.executemany(sql.JOURNAL_UPSERT, map(sql.JOURNAL_PARAMS, batch.journal))
            if batch.accounts:
                conn.executemany(sql.ACCOUNT_UPSERT, map(sql.ACCOUNT_PARAMS, batch.accounts))
        except _Rejected as rejected:
            self._rollback(conn)
            if _unavailable(rejected.cause):
                raise StoreUnavailable(f"batch not written: {rejected.cause}") from rejected.cause
            raise StoreError(self._explain(conn, rejected)) from rejected.cause
        except (sqlite3.Error, OverflowError) as exc:
            self._rollback(conn)
            raise _not_written(exc) from exc
        except BaseException:
            self._rollback(conn)
            raise
        if commit:
            self._commit(conn)

    def _commit(self, conn: sqlite3.Connection) -> None:
        """Commit the open transaction; a failure rolls it back and raises StoreError."""
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise _not_written(exc) from exc
        except BaseException:
            self._rollback(conn)
            raise

    def _checkpoint_soon(self) -> None:
        """Start a checkpoint in a thread of its own unless one is running or one started within the last
        ``checkpoint_every_s``. The first one turns SQLite's automatic checkpoint off for this connection
        (SQLite would otherwise run one inside a commit)."""
        now = time.monotonic()
        if not self._checkpoint_idle.is_set() or now - self._checkpointed_at < self.checkpoint_every_s:
            return
        if self._checkpointer is None and self.path is not None:
            try:
                self._checkpointer = sqlite3.connect(
                    self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False
                )
                self._live().execute("PRAGMA wal_autocheckpoint = 0")
            except sqlite3.Error as exc:
                self.checkpoint_error = f"cannot open a connection for checkpoints: {exc}"
                return
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        self._checkpointed_at = now
        self._checkpoint_idle.clear()

        def checkpoint() -> None:
            checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        def done(outcome: Any) -> None:  # in the checkpoint's thread
            try:
                outcome.unwrap()
                self.checkpoint_error = None
            except Exception as exc:
                if self.checkpoint_error is None:
                    log.warning("store_checkpoint_failed", path=str(self.path), error=str(exc))
                self.checkpoint_error = f"checkpoint failed: {exc}"
            finally:
                self._checkpoint_idle.set()

        trio.lowlevel.start_thread_soon(checkpoint, done)

    def _durability(self, conn: sqlite3.Connection, level: str, *, lazy: bool) -> None:
        """``synchronous = NORMAL`` for a batch that nothing waits on (``Batch.sync`` False), the configured
        level for every other. In WAL mode a NORMAL commit is written to the WAL without an fsync: it
        survives the process dying, and the next synced commit (the WAL is written in order) makes it and
        everything before it durable."""
        if lazy is not self._lazy:
            try:
                conn.execute(f"PRAGMA synchronous = {'NORMAL' if lazy else level}")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot set the durability of a write: {exc}") from exc
            self._lazy = lazy

    @staticmethod
    def _run(conn: sqlite3.Connection, step: sql.Step, rows: Sequence[Any]) -> None:
        if not step.update:
            SqliteStore._insert_rows(conn, step, rows)
            return
        try:
            cursor = conn.executemany(step.sql, map(step.params, rows))
        except (sqlite3.Error, OverflowError) as exc:
            raise _Rejected(step, rows, exc) from exc
        # an UPDATE by primary key touches at most one row, so the sum tells whether every key matched
        if step.update and cursor.rowcount != len(rows):
            for row in rows:
                key = step.key(row)
                if conn.execute(step.exists_sql, key).fetchone() is None:
                    raise StoreError(
                        f"batch rejected: {step.part}: no row with {sql.describe(step.key_names, key)}"
                    )
            raise StoreError(f"batch rejected: {step.part}: {cursor.rowcount} of {len(rows)} rows updated")

    @staticmethod
    def _insert_rows(conn: sqlite3.Connection, step: sql.Step, rows: Sequence[Any]) -> None:
        n = len(rows)
        for start in range(0, n, sql.CHUNK):
            chunk = rows if n <= sql.CHUNK else rows[start : start + sql.CHUNK]
            params = _flat(step, chunk)
            try:
                if params is None:
                    conn.executemany(step.sql, map(step.params, chunk))
                else:
                    conn.execute(step.many[len(chunk)], params)
            except sqlite3.IntegrityError as exc:
                # a multi-row INSERT checks its rows in order: the same row fails, as it would alone
                raise _Rejected(step, rows, exc) from exc
            except _BIND_ERRORS as exc:
                cause = exc if params is None else SqliteStore._row_by_row(conn, step, chunk, exc)
                raise _Rejected(step, rows, cause) from exc
            except sqlite3.Error as exc:
                raise _Rejected(step, rows, exc) from exc

    @staticmethod
    def _row_by_row(
        conn: sqlite3.Connection, step: sql.Step, rows: Sequence[Any], exc: Exception
    ) -> Exception:
        """The error inserting ``rows`` one at a time raises, where binding them all at once raised ``exc``.

        A multi-row INSERT binds every row before it inserts any, so a bad value (too large, of an
        unsupported type) surfaces before a conflict in an earlier row, and is numbered by its place in
        the whole statement. The statement never ran, so replaying the rows one at a time, inside the
        transaction about to be rolled back, gives the error of the earliest bad row, numbered within that
        row: the error the store has always reported."""
        if not conn.in_transaction:
            return exc
        try:
            conn.executemany(step.sql, map(step.params, rows))
        except (sqlite3.Error, OverflowError) as first:
            return first
        return exc

    @staticmethod
    def _explain(conn: sqlite3.Connection, rejected: _Rejected) -> str:
        """Name the offending key of a failed insert, looked up in the state before the batch."""
        step, cause = rejected.step, rejected.cause
        if isinstance(cause, OverflowError):
            return f"batch rejected: {step.part}: an integer is outside the 64-bit range"
        if isinstance(cause, sqlite3.IntegrityError) and not step.update:
            try:
                found = sql.conflict(
                    step, rejected.rows, lambda key: conn.execute(step.exists_sql, key).fetchone() is not None
                )
            except (sqlite3.Error, OverflowError):
                found = None
            if found is not None:
                return found
        return f"batch rejected: {step.part}: {cause}"

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # if ROLLBACK itself fails, SQLite has already ended the transaction on its own
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # --- reads ----------------------------------------------------------------------------------------

    async def _rows(self, statement: str, params: tuple[Any, ...]) -> list[Any]:
        async with self._busy:
            conn = self._live()
            try:
                return conn.execute(statement, params).fetchall()
            except (sqlite3.Error, OverflowError) as exc:
                raise StoreError(f"query failed: {exc}") from exc

    async def purge_evaluations(self, before_ms: int) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM symbol_registrations WHERE evaluated_at_ms < ?", (before_ms,))
            return int(
                conn.execute(
                    "DELETE FROM handshake_evaluations WHERE evaluated_at_ms < ?", (before_ms,)
                ).rowcount
            )

        return await self._purge(purge)

    async def purge_closed_trades(self, before_ms: int, limit: int = 100) -> int:
        sql.check_limit(limit)

        def purge(conn: sqlite3.Connection) -> int:
            gone = [(r[0],) for r in conn.execute(sql.PURGEABLE_TRADES, (before_ms, limit)).fetchall()]
            for statement in sql.PURGE_TRADE if gone else ():
                conn.executemany(statement, gone)
            return len(gone)

        return await self._purge(purge)

    async def _purge(self, purge: Callable[[sqlite3.Connection], int]) -> int:
        """``purge`` in one transaction (rolled back if it fails); how many it removed."""
        async with self._busy:
            return self._purge_now(purge)

    def _purge_now(self, purge: Callable[[sqlite3.Connection], int]) -> int:
        conn = self._live()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = purge(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        except (sqlite3.Error, OverflowError) as exc:
            raise StoreError(f"purge failed: {exc}") from exc
        return gone

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):  # a write or a checkpoint in a worker thread ends first
            await self._busy.acquire()
            if not self._checkpoint_idle.is_set():
                await trio.to_thread.run_sync(self._checkpoint_idle.wait)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
        self._busy.release()
        await trio.lowlevel.checkpoint()
