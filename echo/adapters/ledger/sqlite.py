"""The ack ledger in an embedded SQLite file of the Agent's own (``agent.ledger_path``).

WAL with ``synchronous = NORMAL``: a commit survives the Agent process dying (the case the ledger is
for); a power cut may lose the last commits, which costs nothing because Core's journal (the source of
truth, written with FULL sync) re-sends every command that has no result. That keeps the ledger write off
the fsync path of the copy."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from echo.adapters.locks import parent_folder
from echo.ports.ledger import LedgerEntry, LedgerError

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ack_ledger (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id   TEXT    NOT NULL UNIQUE,
    account_id   TEXT    NOT NULL,
    line         BLOB    NOT NULL,
    affirmed_ms  INTEGER NOT NULL,
    attempts     INTEGER NOT NULL
)
"""


class SqliteLedger:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> SqliteLedger:
        db_path = Path(path)
        try:
            parent_folder(db_path, "the ack ledger", LedgerError)
            conn = sqlite3.connect(db_path, isolation_level=None, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ack ledger at {db_path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"cannot put {db_path} in WAL mode (journal_mode is {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise LedgerError(
                    f"{db_path} has ledger schema {version}; this agent knows up to {_SCHEMA_VERSION}"
                )
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"cannot open the ack ledger at {db_path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, db_path)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError("the ledger is closed")
        return self._conn

    def load(self) -> list[LedgerEntry]:
        try:
            rows = self._live().execute(
                "SELECT command_id, account_id, line, affirmed_ms, attempts FROM ack_ledger ORDER BY seq"
            )
            return [LedgerEntry(c, a, bytes(line), r, n) for c, a, line, r, n in rows]
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ack ledger: {exc}") from exc

    def apply(self, puts: Sequence[LedgerEntry], deletes: Sequence[str]) -> None:
        if not puts and not deletes:
            return
        conn = self._live()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if puts:
                    conn.executemany(
                        "INSERT INTO ack_ledger (command_id, account_id, line, affirmed_ms, attempts) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (command_id) DO UPDATE SET "
                        "attempts = excluded.attempts, affirmed_ms = excluded.affirmed_ms",
                        [(e.command_id, e.account_id, e.line, e.affirmed_ms, e.attempts) for e in puts],
                    )
                if deletes:
                    conn.executemany("DELETE FROM ack_ledger WHERE command_id = ?", [(c,) for c in deletes])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the ack ledger: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
