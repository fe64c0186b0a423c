"""Builds the all-in-one copier: store, transport, Core, Agent (and its pipe server)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from echo.adapters.clock import SystemClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.ledger.sqlite import SqliteLedger
from echo.adapters.pipe.unix import UnixPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.postgres import PostgresStore
from echo.adapters.store.sqlite import SqliteStore
from echo.adapters.transport.inproc import InProcTransport
from echo.delivery import machine as delivery
from echo.domain.config import Config, ConfigError
from echo.ports.clock import Clock
from echo.ports.ledger import AckLedger
from echo.ports.pipe import PipeListener
from echo.ports.store import Store
from echo.services.agent.service import Agent
from echo.services.core.service import Core
from echo.services.ids import IdFactory


async def open_store(url: str, synchronous: str = "FULL") -> Store:
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SqliteStore.open(Path(url.removeprefix("sqlite:///")), synchronous=synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresStore.open(url)
    raise ConfigError(f"unsupported store url {url!r} (sqlite:///PATH, postgresql://... or memory://)")


def ledger_url(config: Config) -> str:
    """The Agent's ack ledger: as configured, else next to an SQLite store, under ``var/`` with a
    PostgreSQL one, in memory with a memory store."""
    if config.agent.ledger_url:
        return config.agent.ledger_url
    store = config.store.url
    if store.startswith("sqlite:///"):
        base = store.removeprefix("sqlite:///")
        stem = base[:-3] if base.endswith(".db") else base
        return f"sqlite:///{stem}-{config.agent.agent_id}-ledger.db"
    if store.startswith(("postgresql://", "postgres://")):
        return f"sqlite:///var/echo-{config.agent.agent_id}-ledger.db"  # the ledger is the Agent's own file
    return "memory://"


def open_ledger(url: str) -> AckLedger:
    if url == "memory://":
        return MemoryLedger()
    if url.startswith("sqlite:///"):
        return SqliteLedger.open(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(f"unsupported ledger url {url!r} (sqlite:///PATH or memory://)")


@dataclass
class Copier:
    """A running all-in-one copier (what tests and the demo look at)."""

    config: Config
    store: Store
    core: Core
    agent: Agent


async def run_all_in_one(
    config: Config,
    *,
    store: Store | None = None,
    listener: PipeListener | None = None,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
    ledger: AckLedger | None = None,
    task_status: trio.TaskStatus[Copier] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run Core and one Agent in this process until cancelled. Starts Core first, then the Agent (whose
    pipe server accepts terminals only once Core is listening)."""
    clock = clock or SystemClock()
    own_store = store is None
    store = store or await open_store(config.store.url, config.store.synchronous)
    listener = listener or UnixPipeListener(config.agent.socket_path)
    own_ledger = ledger is None
    try:
        ledger = ledger or open_ledger(ledger_url(config))
    except BaseException:
        if own_store:
            await store.aclose()
        raise
    transport = InProcTransport()
    try:
        async with trio.open_nursery() as nursery:
            d = config.delivery
            settings = delivery.Settings(d.ack_timeout_ms, d.retry_backoff_ms, d.max_retries)
            core = Core(
                transport.hub(),
                store,
                clock,
                config.core,
                delivery_settings=settings,
                ids=ids,
                policies=config.policies(),
                protocol=config.protocol,
                catalog=config.symbols,
            )
            await nursery.start(core.run)
            link = await transport.connect(config.agent.agent_id)
            agent = Agent(link, listener, clock, config.agent, config.delivery, ledger)
            await nursery.start(agent.run)
            task_status.started(Copier(config, store, core, agent))
    finally:
        if own_ledger:
            ledger.close()
        if own_store:
            with trio.CancelScope(shield=True):
                await store.aclose()
