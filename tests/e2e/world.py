"""The world of an end-to-end test: the copier, simulated terminals on it, and the waits between them.

In one trio process on in-memory pipes (``start_copier``, ``World`` from ``start_world``, and
``CopierProcess``, a copier that dies and starts again on the same store), meant for trio's MockClock; or
as processes a user runs (``CLI``, ``start_run``, ``read_until``) on a real socket. Terminals take their
broker's and their script's randomness from the seeds they are given, so a test is the same scenario on
every run."""

from __future__ import annotations

import functools
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from echo.adapters.clock import TrioClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.app.root import Copier, run_all_in_one
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, CoreConfig, StoreConfig
from echo.ports.clock import Clock
from echo.ports.config import ConfigSource
from echo.ports.ledger import AckLedger
from echo.ports.pipe import PipeListener
from echo.ports.store import Batch, Store, StoreError
from echo.services.core.service import Core
from echo.sim.broker import SimBroker
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

Connect = Callable[[], Awaitable[trio.abc.Stream]]
Seed = int | float | str
Terminal = SimSlaveEA | SimMasterEA

CLI = [sys.executable, "-m", "echo"]
"""``echo-copier`` as a process, from this checkout."""


# ----------------------------------------------------------------------------------------------- stores


class FlakyStore(MemoryStore):
    """A memory store whose next ``fail_next`` writes fail, as a database that is briefly unavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0

    async def write(self, batch: Batch) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise StoreError("database is unavailable")
        await super().write(batch)


# ------------------------------------------------------------------------------------------- terminals


def slave_terminal(
    account: str,
    profile: int,
    market: SimMarket,
    seed: Seed,
    connect: Connect,
    now_ms: Callable[[], int],
    **options: Any,
) -> SimSlaveEA:
    """A slave terminal on broker profile ``profile`` whose broker draws from ``random.Random(seed)``;
    ``options`` go to ``SimSlaveEA`` (``token``...)."""
    return SimSlaveEA(account, slave_broker(profile, market, random.Random(seed)), connect, now_ms, **options)


def master_terminal(
    account: str,
    market: SimMarket,
    broker_seed: Seed,
    script_seed: Seed,
    connect: Connect,
    now_ms: Callable[[], int],
    **options: Any,
) -> SimMasterEA:
    """A master terminal whose broker and trading script draw from generators of their own seeds;
    ``options`` go to ``SimMasterEA`` (``token``...)."""
    return SimMasterEA(
        account,
        master_broker(market, random.Random(broker_seed)),
        connect,
        now_ms,
        random.Random(script_seed),
        **options,
    )


async def start_slave_and_master(
    nursery: trio.Nursery,
    market: SimMarket,
    connect: Connect,
    now_ms: Callable[[], int],
    profile: int = 0,
) -> tuple[SimSlaveEA, SimMasterEA]:
    """Slave 51001 (broker profile ``profile``, seed 2) and master 9001 (seeds 3 and 4) started on
    ``connect``, the slave first, each once it has handshaken."""
    slave = slave_terminal("51001", profile, market, 2, connect, now_ms)
    master = master_terminal("9001", market, 3, 4, connect, now_ms)
    await nursery.start(slave.run)
    await nursery.start(master.run)
    return slave, master


def fills(slave: SimSlaveEA) -> Counter[str]:
    """Successful fills per trade_id on a slave terminal."""
    return Counter(
        r.trade_id for r in slave.results.values() if isinstance(r, m.ExecutionResult) and r.success
    )


async def wait_online(core: Core, *accounts: str) -> None:
    """Until Core has every one of ``accounts`` online."""
    await core.wait_for(lambda: all(a in core.accounts and core.accounts[a].online for a in accounts))


async def wait_settled(core: Core) -> None:
    """Until Core holds no trade and no command in flight."""
    await core.wait_for(lambda: not core.trades and core.in_flight == 0)


# ------------------------------------------------------------------------------------------ in process


def e2e_config(**fields: Any) -> Config:
    """The tests' all-in-one configuration: Agent ``agent-e2e``, state in memory, and ``fields``."""
    return Config(agent=AgentConfig(agent_id="agent-e2e"), store=StoreConfig("memory://"), **fields)


async def start_copier(
    nursery: trio.Nursery,
    config: Config,
    *,
    store: Store | None = None,
    listener: PipeListener | None = None,
    clock: Clock | None = None,
    ledger: AckLedger | None = None,
    config_source: ConfigSource | None = None,
) -> Copier:
    """``run_all_in_one`` on ``config`` in ``nursery``, once it serves; what is not given is the root's own
    choice from the configuration."""
    given: dict[str, Any] = {
        "store": store,
        "listener": listener,
        "clock": clock,
        "ledger": ledger,
        "config_source": config_source,
    }
    started: Copier = await nursery.start(
        functools.partial(run_all_in_one, config, **{k: v for k, v in given.items() if v is not None})
    )
    return started


class World:
    """A copier and its terminals in one trio process, on in-memory pipes. The terminals' brokers and
    scripts draw from ``random.Random(seed)`` in the order they are made."""

    def __init__(
        self, nursery: trio.Nursery, copier: Copier, listener: MemoryPipeListener, seed: int
    ) -> None:
        self.nursery, self.copier, self.listener = nursery, copier, listener
        self.rng = random.Random(seed)
        self.market = SimMarket(random.Random(seed))
        self.clock = TrioClock()
        self.slaves: list[SimSlaveEA] = []
        self.masters: list[SimMasterEA] = []

    @property
    def core(self) -> Core:
        return self.copier.core

    def slave(
        self, account: str, profile: int, *, connect: Connect | None = None, broker: SimBroker | None = None
    ) -> SimSlaveEA:
        """A slave terminal, made but not started (``start``); its broker draws from the world's generator
        unless one is given."""
        s = SimSlaveEA(
            account,
            broker or slave_broker(profile, self.market, random.Random(self.rng.random())),
            connect or self.listener.connect,
            self.clock.now_ms,
        )
        self.slaves.append(s)
        return s

    def master(
        self, account: str, *, connect: Connect | None = None, now_ms: Callable[[], int] | None = None
    ) -> SimMasterEA:
        """A master terminal, made but not started (``start``)."""
        ms = SimMasterEA(
            account,
            master_broker(self.market, random.Random(self.rng.random())),
            connect or self.listener.connect,
            now_ms or self.clock.now_ms,
            random.Random(self.rng.random()),
        )
        self.masters.append(ms)
        return ms

    async def start(self, terminal: Terminal, scope: trio.CancelScope | None = None) -> None:
        """Start ``terminal`` in the world's nursery once it has handshaken; inside ``scope`` when given, so
        that cancelling it closes that terminal alone."""
        if scope is None:
            await self.nursery.start(terminal.run)
            return

        async def run_in_scope(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await terminal.run(task_status=task_status)

        await self.nursery.start(run_in_scope)

    async def add_slave(self, account: str, profile: int, *, connect: Connect | None = None) -> SimSlaveEA:
        s = self.slave(account, profile, connect=connect)
        await self.start(s)
        return s

    async def add_master(self, account: str, *, connect: Connect | None = None) -> SimMasterEA:
        ms = self.master(account, connect=connect)
        await self.start(ms)
        return ms

    async def online(self, *accounts: str) -> None:
        await wait_online(self.copier.core, *accounts)

    async def settled(self) -> None:
        await wait_settled(self.copier.core)


async def start_world(
    nursery: trio.Nursery,
    seed: int = 1,
    core: CoreConfig | None = None,
    store: Store | None = None,
    *,
    config: Config | None = None,
    config_source: ConfigSource | None = None,
) -> World:
    """The all-in-one copier on a fresh in-memory pipe and ``store`` (a fresh memory store by default),
    under ``config`` (``e2e_config`` with ``core`` by default), and a world of terminals for it."""
    listener = MemoryPipeListener()
    copier = await start_copier(
        nursery,
        config or e2e_config(core=core or CoreConfig()),
        store=store or MemoryStore(),
        listener=listener,
        clock=TrioClock(),
        config_source=config_source,
    )
    return World(nursery, copier, listener, seed)


class CopierProcess:
    """The all-in-one copier as a process that dies and starts again on the same store, socket and clock
    (``run`` in a nursery, then cancel the scope it returns); the store and the Agent's ack ledger are its
    disk and outlive it (``ledger_on_disk=False``: the ledger dies with each process, as the all-in-one
    copier's does by default)."""

    def __init__(self, config: Config, store: Store | None = None, *, ledger_on_disk: bool = True) -> None:
        self.config = config
        self.store: Store = store or MemoryStore()
        self.listener, self.clock = MemoryPipeListener(), TrioClock()
        self.ledger = MemoryLedger()
        self.ledger_on_disk = ledger_on_disk
        self.copiers: list[Copier] = []

    @property
    def core(self) -> Core:
        """The running (last started) copier's Core."""
        return self.copiers[-1].core

    async def run(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        if not self.ledger_on_disk:
            self.ledger = MemoryLedger()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                self.copiers.append(
                    await start_copier(
                        n,
                        self.config,
                        store=self.store,
                        ledger=self.ledger,
                        listener=self.listener,
                        clock=self.clock,
                    )
                )
                task_status.started(scope)


# ----------------------------------------------------------------------------------------- processes


async def read_until(proc: trio.Process, marker: bytes, times: int = 1) -> bytes:
    """Read a process's stderr until ``marker`` has appeared ``times`` times (the process says it is ready,
    or has done that much)."""
    assert proc.stderr is not None
    seen = b""
    while seen.count(marker) < times:
        chunk = await proc.stderr.receive_some()
        assert chunk, f"process ended before saying {marker!r}: {seen.decode(errors='replace')}"
        seen += chunk
    return seen


async def start_run(config: Path, role: str = "all") -> trio.Process:
    """``run --role ROLE --config CONFIG`` as a process, once it says it serves (its stderr stays piped for
    ``read_until``)."""
    proc = await trio.lowlevel.open_process(
        [*CLI, "run", "--role", role, "--config", str(config)], stderr=subprocess.PIPE
    )
    await read_until(proc, b"serving terminals" if role == "agent" else b"copying")
    return proc


def sim_ea(sock: Path, role: str, account: str, *options: str) -> list[str]:
    """The command line of a simulated terminal (``sim-ea``) on the Agent's socket ``sock``, logging JSON;
    ``options`` such as ``--profile 2`` or ``--trades 4``."""
    return [
        *CLI,
        "sim-ea",
        "--role",
        role,
        "--account",
        account,
        "--socket",
        str(sock),
        *options,
        "--log-format",
        "json",
    ]
