"""Schema migrations: the numbered files ``sql/NNNN_name.sql``, each applied once, in order.

A migration's version is its four-digit prefix. Each one runs in its own transaction together with the
row that records it in ``schema_migrations``, so a failed migration leaves nothing behind and running
the runner again (or from two processes at once) applies nothing twice.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from echo.ports.store import StoreError

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
"""``echo/sql/``: shipped inside the package, so an installed copier migrates its store without a checkout
(the repository's top-level ``sql/`` links here)."""

_FILE_RE = re.compile(r"^(\d{4})_[A-Za-z0-9_\-]+\.sql$")

_CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT NOT NULL PRIMARY KEY, applied_at_ms BIGINT)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    """The file's four-digit prefix, e.g. ``"0001"``."""
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def discover(directory: str | Path | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: ``echo/sql/``), ordered by version.

    Files that do not look like ``NNNN_name.sql`` are ignored; two files with one version are an error.
    """
    root = Path(directory) if directory is not None else SQL_DIR
    if not root.is_dir():
        raise StoreError(f"migrations directory not found: {root}")
    found: dict[str, Migration] = {}
    for path in root.iterdir():
        m = _FILE_RE.match(path.name)
        if m is None or not path.is_file():
            continue
        version = m.group(1)
        if version in found:
            raise StoreError(
                f"two migrations with version {version}: {found[version].path.name}, {path.name}"
            )
        found[version] = Migration(version, path)
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """Split a SQL script into single statements (semicolons inside strings and comments are kept)."""
    statements: list[str] = []
    buf = ""
    *parts, tail = sql.split(";")
    for part in parts:
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if _has_code(buf):
                statements.append(buf.strip())
            buf = ""
    rest = buf + tail
    if _has_code(rest):
        raise StoreError(f"unterminated SQL statement: {rest.strip()[:80]!r}")
    return statements


def _has_code(text: str) -> bool:
    """Whether ``text`` holds more than whitespace, ``--`` comment lines and semicolons."""
    for line in text.splitlines():
        stripped = line.strip().strip(";").strip()
        if stripped and not stripped.startswith("--"):
            return True
    return False


def applied_versions(conn: sqlite3.Connection) -> set[str]:
    conn.execute(_CREATE_MIGRATIONS)
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def apply_sqlite(conn: sqlite3.Connection, directory: str | Path | None = None) -> list[str]:
    """Apply the migrations not yet recorded in ``schema_migrations``; return the versions applied now.

    ``conn`` must be in autocommit mode (``isolation_level=None``): the runner opens its own transactions.
    """
    if conn.isolation_level is not None:
        raise StoreError("apply_sqlite needs a connection in autocommit mode (isolation_level=None)")
    migrations = discover(directory)
    try:
        done = applied_versions(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read schema_migrations: {exc}") from exc
    applied: list[str] = []
    for migration in migrations:
        if migration.version in done:
            continue
        statements = split_statements(migration.sql())
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # another process may have applied it between our read and our lock
                row = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if row is None:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)",
                        (migration.version, time.time_ns() // 1_000_000),
                    )
                    applied.append(migration.version)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"migration {migration.path.name} failed: {exc}") from exc
    return applied
