"""The simulated world of one run: the copier process, the masters and slaves with their brokers, the
faulty connections between them, and the crash-restarts, all in one trio process on a virtual clock.

The copier is the all-in-one copier (Core + Agent wired as ``root.run_all_in_one`` does, or Core and the
Agent over gRPC) on a ``MemoryStore`` that plays the disk (or the run's own store) and a
``MemoryPipeListener``. A crash-restart is of the copier process (its in-memory state is gone; it starts
again on the same store), of a slave terminal (the broker is the real world and survives; the terminal's
state file survives or not, at random) or of a master terminal (it starts again with its queue file; which
trades are open is the trader's book, which survives). Every random choice comes from the run's one
``random.Random(seed)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import random
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import trio
import trio.testing

from echo.adapters.aio import asyncio_loop
from echo.adapters.clock import TrioClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.app.root import Copier, open_store, run_all_in_one, run_split_in_process
from echo.app.simulation.oracle import summarize
from echo.domain.config import AgentConfig, Config, SplitConfig, StoreConfig
from echo.ports.clock import Clock
from echo.ports.ledger import AckLedger
from echo.ports.pipe import PipeListener
from echo.ports.store import Store
from echo.services.ids import IdFactory
from echo.sim.accounts import master_ids, slave_ids, trades_per_master
from echo.sim.broker import SimBroker
from echo.sim.faults import FaultCounts, FaultyStream
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

if TYPE_CHECKING:
    from echo.app.simulation.run import SimOptions


class _StillClockStore:
    """The store, with virtual time standing still while one of its calls is in flight.

    PostgreSQL's calls run in a worker thread (``trio.to_thread``), which the ``MockClock`` cannot see: every
    task is blocked meanwhile, so autojump would move virtual time to the next deadline (timeouts fire, the
    masters re-send, the router turns events away) while the database answers in real time. During a call
    the clock's autojump is off: trio sleeps until the thread is done, the clock unmoved, as it would be on
    a store that answers at once (SQLite, memory)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self._in_flight = 0
        self._threshold = 0.0

    @contextlib.contextmanager
    def _still(self) -> Iterator[None]:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            yield
            return
        if self._in_flight == 0:
            self._threshold = clock.autojump_threshold
            clock.autojump_threshold = math.inf
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                clock.autojump_threshold = self._threshold

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with self._still():
                return await attr(*args, **kwargs)

        return call


def still_clock_store(store: Store) -> Store:
    """``store`` with virtual time held still during its calls (see ``_StillClockStore``)."""
    return cast(Store, _StillClockStore(store))


async def run_copier(
    config: Config,
    store: Store,
    listener: PipeListener,
    clock: Clock,
    ids: IdFactory,
    ledger: AckLedger,
    transport: str = "inproc",
    *,
    task_status: trio.TaskStatus[Copier] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The all-in-one copier (or Core and the Agent over gRPC), with Core drawing its ids from ``ids``: the
    order of Core's retry timers breaks ties by command_id, so ids from an unseeded random source would
    make a seed's run differ."""
    run = run_split_in_process if transport == "grpc" else run_all_in_one
    await run(
        config, store=store, listener=listener, clock=clock, ids=ids, ledger=ledger, task_status=task_status
    )


@dataclass(eq=False)
class SlaveSlot:
    """One slave account across terminal restarts: its broker (the real world) and every incarnation."""

    index: int
    account_id: str
    broker: SimBroker
    state_path: Path
    incarnations: list[SimSlaveEA] = field(default_factory=list)
    scope: trio.CancelScope | None = None


@dataclass(eq=False)
class MasterSlot:
    account_id: str
    broker: SimBroker
    rng: random.Random
    queue_path: Path
    n_trades: int
    incarnations: list[SimMasterEA] = field(default_factory=list)
    scope: trio.CancelScope | None = None
    done: trio.Event = field(default_factory=trio.Event)
    """The script has opened all its trades and the master is flat."""

    @property
    def current(self) -> SimMasterEA:
        return self.incarnations[-1]


_ProcessStart = Callable[..., Awaitable[None]]


class World:
    """One run's copier, terminals, brokers and faults; ``run`` plays it out and returns the summary."""

    def __init__(self, opts: SimOptions, workdir: Path) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.market = SimMarket(random.Random(self.rng.getrandbits(64)))
        self.clock = TrioClock()
        self.store: Store = MemoryStore()  # the copier's disk: it outlives every copier process
        self.ledger = MemoryLedger()  # the Agent's ack ledger file, likewise
        self.listener = MemoryPipeListener()
        self.config = dataclasses.replace(
            opts.config or Config(),
            agent=AgentConfig(agent_id="agent-sim"),
            store=StoreConfig(url=opts.store_url),
        )
        self.counts = FaultCounts()
        self.crash_events: list[dict[str, Any]] = []
        self.copiers: list[Copier] = []
        self.copier_scope: trio.CancelScope | None = None
        self.go = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.slaves = [
            SlaveSlot(
                i,
                acc,
                slave_broker(i, self.market, random.Random(self.rng.getrandbits(64))),
                workdir / f"slave-{acc}.jsonl",
            )
            for i, acc in enumerate(slave_ids(opts.slaves))
        ]
        self.masters = [
            MasterSlot(
                acc,
                master_broker(self.market, random.Random(self.rng.getrandbits(64))),
                random.Random(self.rng.getrandbits(64)),
                workdir / f"master-{acc}.jsonl",
                n,
            )
            for acc, n in zip(
                master_ids(opts.masters), trades_per_master(opts.trades, opts.masters), strict=True
            )
        ]

    # -------------------------------------------------------------------------------------- connections

    async def _connect(self) -> trio.abc.Stream:
        stream = await self.listener.connect()
        if not self.opts.faults.on_lines:
            return stream
        return FaultyStream(stream, random.Random(self.rng.getrandbits(64)), self.opts.faults, self.counts)

    # ---------------------------------------------------------------------------------------- processes

    async def _copier_process(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        ids = IdFactory(self.clock, random.Random(self.rng.getrandbits(64)))
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                self.copiers.append(
                    await nursery.start(
                        run_copier,
                        self.config,
                        self.store,
                        self.listener,
                        self.clock,
                        ids,
                        self.ledger,
                        self.opts.transport,
                    )
                )
                task_status.started(scope)

    async def _slave_process(
        self, slot: SlaveSlot, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        ea = SimSlaveEA(
            slot.account_id, slot.broker, self._connect, self.clock.now_ms, state_path=slot.state_path
        )
        slot.incarnations.append(ea)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(ea.run)
                task_status.started(scope)

    async def _master_process(
        self, slot: MasterSlot, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        ea = SimMasterEA(
            slot.account_id,
            slot.broker,
            self._connect,
            self.clock.now_ms,
            slot.rng,
            queue_path=slot.queue_path,
        )
        if slot.incarnations:
            # The trader's book survives the terminal (a real terminal reads it from its order pool).
            prev = slot.incarnations[-1]
            ea.trades = prev.trades
            ea.trades_opened, ea.partials = prev.trades_opened, prev.partials
            ea.modifies, ea.closes = prev.modifies, prev.closes
        slot.incarnations.append(ea)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(ea.run)
                task_status.started(scope)
                await self.go.wait()
                await ea.run_script(
                    slot.n_trades - ea.trades_opened, max_open=self.opts.max_open, pace=self.opts.pace
                )
                slot.done.set()

    async def _start(self, process: _ProcessStart, *args: Any) -> trio.CancelScope:
        assert self._nursery is not None
        scope: trio.CancelScope = await self._nursery.start(process, *args)
        return scope

    # ------------------------------------------------------------------------------------------ crashes

    def _script_seconds(self) -> float:
        """Roughly how long the masters trade: about 2.5 actions per trade, ``pace`` apart."""
        return max(1.0, max(s.n_trades for s in self.masters) * 2.5 * self.opts.pace)

    async def _crasher(self, t0: float, done: trio.Event) -> None:
        span = self._script_seconds()
        times = sorted(self.rng.uniform(0.02, 1.0) * span for _ in range(self.opts.faults.crash))
        for at in times:
            await trio.sleep_until(t0 + at)
            await self._crash()
        done.set()

    async def _crash(self) -> None:
        kind = self.rng.choice(("copier", "slave", "master"))
        pause = self.rng.uniform(*self.opts.crash_pause)
        event: dict[str, Any] = {"t": round(trio.current_time(), 3), "kind": kind, "pause": round(pause, 3)}
        self.counts.crashes[kind] += 1
        if kind == "copier":
            assert self.copier_scope is not None
            self.copier_scope.cancel()  # the process dies: memory is gone, the store keeps what committed
            await trio.sleep(pause)
            self.copier_scope = await self._start(self._copier_process)
        elif kind == "slave":
            slave = self.rng.choice(self.slaves)
            keep = self.rng.random() < 0.5
            event.update(account=slave.account_id, state_file=keep)
            assert slave.scope is not None
            slave.scope.cancel()
            await trio.sleep(pause)
            if not keep:
                slave.state_path.unlink(missing_ok=True)
            slave.scope = await self._start(self._slave_process, slave)
        else:
            master = self.rng.choice(self.masters)
            event.update(account=master.account_id)
            assert master.scope is not None
            master.scope.cancel()
            await trio.sleep(pause)
            master.scope = await self._start(self._master_process, master)
        self.crash_events.append(event)

    # ------------------------------------------------------------------------------------------ running

    async def run_with_asyncio(self) -> dict[str, Any]:
        """``run`` inside a trio-asyncio loop (gRPC lives on asyncio), on a port chosen for the run."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            where = f"127.0.0.1:{probe.getsockname()[1]}"
        self.config = dataclasses.replace(self.config, split=SplitConfig(where, where))
        async with asyncio_loop():
            return await self.run()

    async def run(self) -> dict[str, Any]:
        if self.opts.store_url != "memory://":
            self.store = still_clock_store(await open_store(self.opts.store_url))
        try:
            return await self._run()
        finally:
            with trio.CancelScope(shield=True):
                await self.store.aclose()

    async def _run(self) -> dict[str, Any]:
        opts = self.opts
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.market.run)
            self.copier_scope = await self._start(self._copier_process)
            for s in self.slaves:
                s.scope = await self._start(self._slave_process, s)
            for ms in self.masters:
                ms.scope = await self._start(self._master_process, ms)
            everyone = [*(s.account_id for s in self.slaves), *(ms.account_id for ms in self.masters)]
            core = self.copiers[-1].core
            with trio.move_on_after(60):
                await core.wait_for(
                    lambda: all(a in core.accounts and core.accounts[a].online for a in everyone)
                )
            t0 = trio.current_time()
            crashes_done = trio.Event()
            nursery.start_soon(self._crasher, t0, crashes_done)
            self.go.set()
            settled = False
            stage = f"the masters' scripts (virtual-time limit {opts.max_virtual_seconds:g} s)"
            with trio.move_on_after(max(0.0, opts.max_virtual_seconds - t0)):
                for ms in self.masters:
                    await ms.done.wait()
                stage = f"the crash-restarts (virtual-time limit {opts.max_virtual_seconds:g} s)"
                await crashes_done.wait()
                stage = f"the masters' acks (virtual-time limit {opts.max_virtual_seconds:g} s)"
                for ms in self.masters:
                    await ms.current.wait_all_acked()
                stage = f"Core to finish every trade (virtual-time limit {opts.max_virtual_seconds:g} s)"
                settled = await self._core_settles()
                if not settled:
                    stage = (
                        f"Core to finish every trade (stalled: nothing in flight and no trade finished for "
                        f"{self.STALL_SECONDS:g} virtual seconds)"
                    )
            summary = await summarize(self, settled, None if settled else stage)
            nursery.cancel_scope.cancel()
        return summary

    STALL_SECONDS = 120.0

    async def _core_settles(self) -> bool:
        """Wait until Core holds no trade and no command in flight. False when it stalls: nothing in flight
        and the same trades held for ``STALL_SECONDS`` (no message can change that any more: the masters
        are done and acked, and Core only acts on messages and its retry timers)."""
        core = self.copiers[-1].core
        while True:
            before = sorted(core.trades)
            with trio.move_on_after(self.STALL_SECONDS):
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                return True
            if core.in_flight == 0 and sorted(core.trades) == before:
                return False
