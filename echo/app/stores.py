"""Which store or ack ledger a URL names, and opening it: ``memory://``, ``sqlite:///PATH`` or
``postgresql://...`` (``postgres://`` too). Every command that takes a store URL parses it here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.ledger.sqlite import SqliteLedger
from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.postgres import PostgresStore
from echo.adapters.store.sqlite import SqliteStore
from echo.domain.config import Config, ConfigError
from echo.domain.paths import in_data_folder
from echo.ports.ledger import AckLedger
from echo.ports.store import Store

StoreKind = Literal["memory", "sqlite", "postgres"]


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A store URL taken apart."""

    kind: StoreKind
    url: str
    path: Path | None = None
    """The database file (``sqlite`` only)."""


def parse_store_url(url: str) -> StoreUrl:
    """What ``url`` names; a ConfigError naming the three forms for anything else."""
    if url == "memory://":
        return StoreUrl("memory", url)
    if url.startswith("sqlite:///"):
        return StoreUrl("sqlite", url, Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        return StoreUrl("postgres", url)
    raise ConfigError(f"unsupported store url {url!r} (sqlite:///PATH, postgresql://... or memory://)")


async def open_store(
    url: str, synchronous: str = "FULL", *, exclusive: bool = False, create: bool = True
) -> Store:
    """The store at ``url``. ``exclusive``: as the store's one copier (Core), refused with InUse naming
    the holder while another process is; ``create=False`` (commands that only read): a store that does
    not exist is an error naming it instead of a new empty one."""
    where = parse_store_url(url)
    if where.path is not None:  # sqlite:///PATH
        return SqliteStore.open(where.path, synchronous=synchronous, exclusive=exclusive, create=create)
    if where.kind == "postgres":
        return await PostgresStore.open(url, exclusive=exclusive, create=create)
    return MemoryStore()


def ledger_url(config: Config, *, all_in_one: bool = False) -> str:
    """The Agent's ack ledger: as configured, else next to an SQLite store, under ``var/`` with a
    PostgreSQL one, in memory with a memory store.

    ``all_in_one`` (Core and the Agent in one process): in memory unless configured. The two live and
    die together, and at its start Core re-sends every command its journal holds without a result (same
    command_id: the terminal answers a repeated one with its first result), so a ledger on disk would
    hold nothing the journal does not; writing it cost a commit before each fan-out's first line left."""
    if config.agent.ledger_url:
        return config.agent.ledger_url
    if all_in_one:
        return "memory://"
    store = config.store.url
    if store.startswith("sqlite:///"):
        base = store.removeprefix("sqlite:///")
        stem = base[:-3] if base.endswith(".db") else base
        return f"sqlite:///{stem}-{config.agent.agent_id}-ledger.db"
    if store.startswith(("postgresql://", "postgres://")):
        # the ledger is the Agent's own file
        return "sqlite:///" + in_data_folder(f"echo-{config.agent.agent_id}-ledger.db")
    return "memory://"


def open_ledger(url: str) -> AckLedger:
    if url == "memory://":
        return MemoryLedger()
    if url.startswith("sqlite:///"):
        return SqliteLedger.open(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(f"unsupported ledger url {url!r} (sqlite:///PATH or memory://)")
