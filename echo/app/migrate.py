"""``migrate``: apply the pending schema migrations of ``sql/`` to the store a URL names (PostgreSQL:
the database is created if missing; SQLite: the file, whose folder must exist)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from echo.adapters.locks import parent_folder
from echo.adapters.store import migrations, postgres


class UnsupportedStore(ValueError):
    """A store URL that names no store ``migrate`` can prepare."""


@dataclass(frozen=True, slots=True)
class Migrated:
    where: str
    """The schema or the file migrated."""
    applied: list[str]
    latest: str
    """The schema version it is at now."""


def migrate(url: str) -> Migrated:
    """Apply what is pending; raises ``StoreError`` when the store cannot be reached or migrated,
    ``StartError`` for a SQLite file whose folder does not exist, ``UnsupportedStore`` otherwise."""
    if url.startswith(("postgresql://", "postgres://")):
        applied = postgres.migrate(url)
        where = f"schema {postgres.split_url(url)[1]}"
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        parent_folder(path, "the store")
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            applied = migrations.apply_sqlite(conn)
        finally:
            conn.close()
        where = str(path)
    else:
        raise UnsupportedStore(f"unsupported store url {url!r}")
    return Migrated(where, applied, migrations.discover()[-1].version)
