"""``echo-copier simulate``: the whole system in one trio process on a virtual clock, with faults.

The all-in-one copier (Core + Agent wired as ``root.run_all_in_one`` does, on a ``MemoryStore`` that plays the
disk and a ``MemoryPipeListener``), simulated masters and slaves with their brokers, and a fault injector,
all on trio's ``MockClock`` with
``autojump_threshold=0``: whenever every task is blocked, virtual time jumps to the next deadline, so hours of
retries and backoffs take seconds. Nothing reads the wall clock (``TrioClock``; the terminals get its
``now_ms``) and every random choice comes from one ``random.Random(seed)``, so a seed is a reproducible
scenario: the same seed prints the same summary.

Faults (``--faults drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5``):

- ``drop``, ``dup``, ``reorder``: per line on every terminal connection, in both directions (a handshake is
  never touched): the line is lost, written twice, or held back and written after the next line;
- ``disconnect``: per line, the connection is closed instead (the terminal reconnects by itself);
- ``crash=K``: K crash-restarts at random times while the masters trade, each of the copier process (its
  in-memory state is gone; it starts again on the same store), of a slave terminal (the broker is the real
  world and survives; the terminal's state file survives or not, at random) or of a master terminal (it
  starts again with its queue file; which trades are open is the trader's book, which survives).

The masters trade their scripts at once; then the run waits (in virtual time, up to a limit) until every
master is flat and acknowledged and the last copier process holds no trade and no command in flight. The
summary counts what the slaves really did, from every incarnation of each terminal and from the brokers:
``copied`` (a fill per trade and slave), ``duplicates`` (more orders opened by ``market_order`` for a trade
on a slave than one; a partial close's remainder is not one), ``lost`` (expected - copied - omitted) and
``open_after`` (slave positions still open); any of them non-zero, or a run that does not settle, is a
failure, reported with the seed and the first broken trade.

**Determinism and trio.** trio's scheduler randomises the order of each batch of runnable tasks with a
module-level ``random.Random`` (``trio._core._run._r``) and breaks deadline ties by ``id()``. For the
duration of a simulation this module seeds ``_r`` from the simulation seed and turns on the deterministic
batch order trio uses under Hypothesis (``_ALLOW_DETERMINISTIC_SCHEDULING``: each batch sorted by task
creation order, then shuffled with ``_r``). Both are trio internals, touched only here, only for the
simulator, and restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
import json
import logging
import math
import random
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import structlog
import trio
import trio.testing

from echo.adapters.aio import asyncio_loop
from echo.adapters.clock import TrioClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.postgres import drop_schema, split_url
from echo.app.demo import master_ids, slave_ids
from echo.app.root import Copier, open_store, run_all_in_one, run_split_in_process
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, SplitConfig, StoreConfig
from echo.domain.ids import trade_id_from_comment
from echo.pipe.jsonenc import to_json
from echo.ports.clock import Clock
from echo.ports.ledger import AckLedger
from echo.ports.pipe import PipeListener
from echo.ports.store import Store
from echo.services.ids import IdFactory
from echo.sim.broker import SimBroker
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

# ------------------------------------------------------------------------------------------------ faults


class FaultSpecError(ValueError):
    """A ``--faults`` value is malformed; the message names the part."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong: per-line probabilities on every terminal connection, and how many crash-restarts."""

    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    disconnect: float = 0.0
    crash: int = 0

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """``drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5`` (every key optional; "" is none)."""
        values: dict[str, float | int] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in ("drop", "dup", "reorder", "disconnect", "crash"):
                raise FaultSpecError(f"{part!r}: expected drop|dup|reorder|disconnect|crash=VALUE")
            if key in values:
                raise FaultSpecError(f"{key} given twice")
            try:
                if key == "crash":
                    values[key] = int(raw)
                    if values[key] < 0:
                        raise ValueError
                else:
                    p = float(raw)
                    if not (math.isfinite(p) and 0.0 <= p < 1.0):
                        raise ValueError
                    values[key] = p
            except ValueError:
                kind = "an integer >= 0" if key == "crash" else "a probability in [0, 1)"
                raise FaultSpecError(f"{key}={raw!r}: must be {kind}") from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def on_lines(self) -> bool:
        return any(p > 0 for p in (self.drop, self.dup, self.reorder, self.disconnect))

    def __str__(self) -> str:
        return (
            f"drop={self.drop:g},dup={self.dup:g},reorder={self.reorder:g},"
            f"disconnect={self.disconnect:g},crash={self.crash}"
        )


@dataclass
class FaultCounts:
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    disconnects: int = 0
    crashes: dict[str, int] = field(default_factory=lambda: {"copier": 0, "slave": 0, "master": 0})

    def as_dict(self) -> dict[str, Any]:
        return {
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "disconnects": self.disconnects,
            "crashes": dict(self.crashes),
        }


_log = structlog.get_logger("echo.simulate")
_ACCOUNT = re.compile(rb'"account_id":"([^"]*)"')
_TYPE = re.compile(rb'"type":"([a-z_]+)"')
_IDS = re.compile(rb'"(trade_id|command_id|event_id)":"([^"]*)"')


class _Direction:
    """One direction of a faulty connection: the unfinished tail of the input and a held-back line."""

    def __init__(self) -> None:
        self.tail = b""
        self.held: bytes | None = None


class FaultyStream(trio.abc.Stream):
    """A terminal's end of its connection, with line faults in both directions (see the module docstring).

    Decisions are per whole line; the handshake line is never dropped, duplicated, held or the cause of a
    disconnect (losing it is the same as losing the connection, which ``disconnect`` covers)."""

    def __init__(
        self, inner: trio.abc.Stream, rng: random.Random, faults: Faults, counts: FaultCounts
    ) -> None:
        self.inner, self.rng, self.faults, self.counts = inner, rng, faults, counts
        self._out = _Direction()
        self._in = _Direction()
        self._closed = False
        self._eof = False
        self.account: str | None = None
        """The account of the handshake that went through (for the trace)."""

    def _trace(self, fault: str, d: _Direction, raw: bytes) -> None:
        """One debug line per injected fault: which connection, which way, which line."""
        if _log.is_enabled_for(logging.DEBUG):
            found = _TYPE.search(raw[:40])
            _log.debug(
                "sim_fault",
                fault=fault,
                account=self.account,
                direction="to_agent" if d is self._out else "to_terminal",
                type=found.group(1).decode() if found else "?",
                **{k.decode(): v.decode() for k, v in _IDS.findall(raw)},
            )

    def _apply(self, lines: list[bytes], d: _Direction) -> tuple[bytes, bool]:
        """The bytes to pass on for these complete lines (without newlines), and whether to disconnect."""
        f, rng, c = self.faults, self.rng, self.counts
        out: list[bytes] = []
        for raw in lines:
            line = raw + b"\n"
            if b'"type":"handshake"' in raw[:40]:
                if self.account is None:
                    found = _ACCOUNT.search(raw)
                    self.account = found.group(1).decode() if found else "?"
                out.append(line)
                continue
            if f.disconnect and rng.random() < f.disconnect:
                c.disconnects += 1
                self._trace("disconnect", d, raw)
                d.held = None
                return b"".join(out), True
            if f.drop and rng.random() < f.drop:
                c.dropped += 1
                self._trace("drop", d, raw)
                continue
            if f.dup and rng.random() < f.dup:
                c.duplicated += 1
                self._trace("dup", d, raw)
                line += line
            if d.held is None and f.reorder and rng.random() < f.reorder:
                c.reordered += 1
                self._trace("hold", d, raw)
                d.held = line
                continue
            out.append(line)
            if d.held is not None:
                out.append(d.held)
                d.held = None
        return b"".join(out), False

    async def _disconnect(self) -> None:
        self._closed = True
        await trio.aclose_forcefully(self.inner)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed (fault)")
        lines = (self._out.tail + bytes(data)).split(b"\n")
        self._out.tail = lines[-1]
        out, disconnect = self._apply(lines[:-1], self._out)
        if out:
            await self.inner.send_all(out)
        if disconnect:
            await self._disconnect()
            raise trio.BrokenResourceError("the connection dropped (fault)")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            if self._closed or self._eof:
                return b""
            data = await self.inner.receive_some()
            if not data:
                return b""
            lines = (self._in.tail + bytes(data)).split(b"\n")
            self._in.tail = lines[-1]
            out, disconnect = self._apply(lines[:-1], self._in)
            if disconnect:
                self._eof = True
                await self._disconnect()
                return out
            if out:
                return out

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._closed = True
        await self.inner.aclose()


# ------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True, slots=True)
class SimOptions:
    seed: int = 1
    masters: int = 1
    slaves: int = 3
    trades: int = 15
    faults: Faults = Faults()
    pace: float = 0.1
    """Mean virtual seconds between a master's actions."""
    max_open: int = 3
    crash_pause: tuple[float, float] = (0.1, 3.0)
    """Virtual seconds a crashed component stays down (uniform)."""
    max_virtual_seconds: float = 3600.0
    """The whole run must settle within this much virtual time."""
    store_url: str = "memory://"
    """Where the copier keeps its state. memory:// and sqlite:/// keep a seed's run identical every time;
    postgresql:// settles alike (virtual time stands still while a store call runs in its thread), but the
    moment a call returns is real, so a seed's run may differ from one time to the next."""
    config: Config | None = None
    """Policies, catalog, protocol and delivery settings to run under (agent and store stay the run's)."""
    transport: Literal["inproc", "grpc"] = "inproc"
    """How Core and the Agent are joined: in-process channels, or gRPC over localhost TCP (split mode's
    transport). gRPC does real network I/O, which the virtual clock cannot wait for: virtual time jumps
    only after 50 ms of real idleness, and a seed's run is no longer identical every time."""

    def __post_init__(self) -> None:
        if self.masters < 1 or self.slaves < 1 or self.trades < 0:
            raise ValueError("need at least one master and one slave, and trades >= 0")
        if not (
            self.pace > 0 and self.max_virtual_seconds > 0 and 0 <= self.crash_pause[0] <= self.crash_pause[1]
        ):
            raise ValueError("pace, max_virtual_seconds and the crash pause must be positive")
        if self.transport not in ("inproc", "grpc"):
            raise ValueError(f"transport must be inproc or grpc, got {self.transport!r}")


def simulation_ok(summary: dict[str, Any]) -> bool:
    return bool(
        summary["settled"]
        and summary["lost"] == 0
        and summary["duplicates"] == 0
        and summary["open_after"] == 0
    )


# ------------------------------------------------------------------------------------------------ store


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


# ------------------------------------------------------------------------------------------------ copier


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


# ------------------------------------------------------------------------------------------------ world


@dataclass(eq=False)
class _SlaveSlot:
    """One slave account across terminal restarts: its broker (the real world) and every incarnation."""

    index: int
    account_id: str
    broker: SimBroker
    state_path: Path
    incarnations: list[SimSlaveEA] = field(default_factory=list)
    scope: trio.CancelScope | None = None


@dataclass(eq=False)
class _MasterSlot:
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


class _World:
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
            _SlaveSlot(
                i,
                acc,
                slave_broker(i, self.market, random.Random(self.rng.getrandbits(64))),
                workdir / f"slave-{acc}.jsonl",
            )
            for i, acc in enumerate(slave_ids(opts.slaves))
        ]
        per_master = [
            opts.trades // opts.masters + (1 if i < opts.trades % opts.masters else 0)
            for i in range(opts.masters)
        ]
        self.masters = [
            _MasterSlot(
                acc,
                master_broker(self.market, random.Random(self.rng.getrandbits(64))),
                random.Random(self.rng.getrandbits(64)),
                workdir / f"master-{acc}.jsonl",
                n,
            )
            for acc, n in zip(master_ids(opts.masters), per_master, strict=True)
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
        self, slot: _SlaveSlot, *, task_status: trio.TaskStatus[trio.CancelScope]
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
        self, slot: _MasterSlot, *, task_status: trio.TaskStatus[trio.CancelScope]
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
            summary = await self._summarize(settled, None if settled else stage)
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

    # ------------------------------------------------------------------------------------------ summary

    async def _summarize(self, settled: bool, waiting_for: str | None) -> dict[str, Any]:
        opts = self.opts
        config = self.config.core
        slave_accounts = [s.account_id for s in self.slaves]
        masters = [ms.current for ms in self.masters]
        expected: list[tuple[str, str]] = [
            (trade_id, acc)
            for ms in masters
            for trade_id in ms.trades
            for acc in config.followers(ms.account_id, slave_accounts)
        ]
        # What every incarnation of each slave terminal answered: one fill is a copy; more tickets than one
        # for a (trade, account) is a duplicate. A terminal that lost its state file starts a fresh dict.
        result_tickets: dict[tuple[str, str], set[int]] = {}
        failures: dict[tuple[str, str], str] = {}
        remainders: set[tuple[str, int]] = set()
        for s in self.slaves:
            for ea in s.incarnations:
                for res in ea.results.values():
                    key = (res.trade_id, s.account_id)
                    if isinstance(res, m.ExecutionResult):
                        if res.success and res.ticket is not None:
                            result_tickets.setdefault(key, set()).add(res.ticket)
                        elif not res.success:
                            failures.setdefault(key, res.error_code.value)
                    elif isinstance(res, m.CloseResult) and res.success and res.new_ticket is not None:
                        remainders.add((s.account_id, res.new_ticket))
        # What the brokers hold: every order a market_order opened (a partial close's remainder is not one).
        broker_tickets: dict[tuple[str, str], set[int]] = {}
        for s in self.slaves:
            for order in [*s.broker.history, *s.broker.open_orders()]:
                trade_id = trade_id_from_comment(order.comment)
                if trade_id is None or (s.account_id, order.ticket) in remainders:
                    continue
                broker_tickets.setdefault((trade_id, s.account_id), set()).add(order.ticket)
        decisions = await self.store.decisions(limit=10_000_000)
        omitted_keys: dict[tuple[str, str], str] = {
            (d.trade_id, d.account_id): d.reason for d in decisions if d.decision == "omit"
        }
        for key, code in failures.items():
            if key not in result_tickets and key not in omitted_keys:
                omitted_keys[key] = f"broker:{code}"
        omit_reasons = Counter(omitted_keys.values())
        still_open = {
            (trade_id_from_comment(o.comment), s.account_id)
            for s in self.slaves
            for o in s.broker.open_orders()
        }
        problems: list[dict[str, Any]] = []
        copied = duplicates = 0
        for key in expected:
            tickets = result_tickets.get(key, set()) | broker_tickets.get(key, set())
            if key in result_tickets:
                copied += 1
            elif key not in omitted_keys:
                problems.append({"trade_id": key[0], "account": key[1], "what": "lost: never filled"})
            if len(tickets) > 1:
                duplicates += len(tickets) - 1
                problems.append(
                    {
                        "trade_id": key[0],
                        "account": key[1],
                        "what": f"duplicate: {len(tickets)} orders opened, tickets {sorted(tickets)}",
                    }
                )
        expected_keys = set(expected)
        for (unknown, acc), tickets in sorted(broker_tickets.items()):
            if (unknown, acc) not in expected_keys:
                duplicates += len(tickets)
                problems.append(
                    {
                        "trade_id": unknown,
                        "account": acc,
                        "what": f"orders of an unknown trade {sorted(tickets)}",
                    }
                )
        open_after = 0
        for s in self.slaves:
            for o in s.broker.open_orders():
                open_after += 1
                problems.append(
                    {
                        "trade_id": trade_id_from_comment(o.comment),
                        "account": s.account_id,
                        "what": f"still open after the master closed: ticket {o.ticket} ({o.lots} lots)",
                    }
                )
        stats: Counter[str] = Counter()
        for c in self.copiers:
            stats.update(c.core.stats)
        summary: dict[str, Any] = {
            "seed": opts.seed,
            "masters": opts.masters,
            "slaves": opts.slaves,
            "faults_spec": str(opts.faults),
            "settled": settled,
            "master_trades": sum(ms.trades_opened for ms in masters),
            "expected_copies": len(expected),
            "copied": copied,
            "omitted": len(omitted_keys),
            "omitted_reasons": dict(sorted(omit_reasons.items())),
            "closed": len(set(result_tickets) - still_open),
            "duplicates": duplicates,
            "lost": len(expected) - copied - len(omitted_keys),
            "open_after": open_after,
            "master_open_after": sum(len(ms.broker.open_orders()) for ms in self.masters),
            "partial_closes": sum(ms.partials for ms in masters),
            "modifications": sum(ms.modifies for ms in masters),
            "faults": self.counts.as_dict(),
            "crash_events": self.crash_events,
            "recognised": sum(ea.recognised for s in self.slaves for ea in s.incarnations),
            "master_resends": sum(ea.resends for ms in self.masters for ea in ms.incarnations),
            "core": {k: stats[k] for k in sorted(stats)},
            "agent": {
                k: sum(c.agent.stats.get(k, 0) for c in self.copiers)
                for k in sorted({k for c in self.copiers for k in c.agent.stats})
            },
            "agent_held_after": len(self.copiers[-1].agent.held) if self.copiers else 0,
            "protocol_errors": sum(c.agent.protocol_errors for c in self.copiers),
            "virtual_seconds": round(trio.current_time(), 3),
            "problems": problems[:20],
            "problem_count": len(problems),
        }
        if waiting_for is not None:
            core = self.copiers[-1].core
            summary["unsettled"] = {
                "waiting_for": waiting_for,
                "core_trade_count": len(core.trades),
                "core_trades": sorted(core.trades)[:20],
                "core_in_flight": core.in_flight,
                "master_pending": {ms.account_id: ms.current.pending for ms in self.masters},
                "masters_done": [ms.account_id for ms in self.masters if ms.done.is_set()],
            }
        return summary


# ------------------------------------------------------------------------------------------------ running


@contextlib.contextmanager
def _deterministic_trio(seed: int) -> Iterator[None]:
    """Seed trio's scheduler and make its batch order depend on that seed only (see the module docstring).
    Reaches into ``trio._core._run``: for the simulator only; restored on exit."""
    run_mod: Any = trio._core._run
    saved_state = run_mod._r.getstate()
    saved_flag = run_mod._ALLOW_DETERMINISTIC_SCHEDULING
    run_mod._r.seed(seed)
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True
    try:
        yield
    finally:
        run_mod._r.setstate(saved_state)
        run_mod._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag


def seed_store(url: str, seed: int) -> str:
    """The store one seed of a multi-seed run uses: a schema (PostgreSQL) or file (SQLite) of its own beside
    the given one, so that no seed meets another's trades."""
    if url.startswith(("postgresql://", "postgres://")):
        conninfo, schema = split_url(url)
        return f"{conninfo}{'&' if '?' in conninfo else '?'}schema={schema}_s{seed}"
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return f"sqlite:///{path.removesuffix('.db')}-s{seed}.db"
    return url


def discard_store(url: str) -> None:
    """Remove a seed's own store (``seed_store``): before the seed runs, and after it if it passed."""
    if url.startswith(("postgresql://", "postgres://")):
        drop_schema(url)
    elif url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)


def run_simulation(opts: SimOptions) -> dict[str, Any]:
    """Run one seed to the end (in its own ``trio.run`` on a ``MockClock``) and return the summary."""
    with tempfile.TemporaryDirectory(prefix="echo-sim-") as tmp, _deterministic_trio(opts.seed):
        world = _World(opts, Path(tmp))
        if opts.transport == "grpc":
            clock = trio.testing.MockClock(autojump_threshold=0.05)
            summary: dict[str, Any] = trio.run(world.run_with_asyncio, clock=clock)
        else:
            summary = trio.run(world.run, clock=trio.testing.MockClock(autojump_threshold=0))
    return summary


def first_problem(summary: dict[str, Any]) -> str:
    if summary["problems"]:
        p = summary["problems"][0]
        return f"trade {p['trade_id']} on {p['account']}: {p['what']}"
    if not summary["settled"]:
        u = summary["unsettled"]
        return (
            f"did not settle: waiting for {u['waiting_for']}; Core still holds {u['core_trades'][:3]}, "
            f"{u['core_in_flight']} command(s) in flight; masters' unacked lines {u['master_pending']}"
        )
    return "none"


# ------------------------------------------------------------------------------------------------ logging


def _virtual_time(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    with contextlib.suppress(RuntimeError):
        event["t"] = round(trio.current_time(), 3)
    return event


def configure_logs(stream: TextIO | None, level: str = "info") -> None:
    """The simulator's logs: JSON lines stamped with virtual seconds (``t``), never wall time, or nothing at
    all without a stream (logging costs more than the simulated work)."""
    levels = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
    }
    threshold = levels[level] if stream is not None else logging.CRITICAL
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _virtual_time,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=to_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=stream or io.StringIO()),
        cache_logger_on_first_use=False,
    )
    sim_log = logging.getLogger("echo.sim")
    sim_log.handlers.clear()
    sim_log.propagate = False
    sim_log.setLevel(threshold if stream is not None else logging.CRITICAL + 10)
    if stream is not None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_JsonFormatter())
        sim_log.addHandler(handler)


class _JsonFormatter(logging.Formatter):
    """The simulated terminals' stdlib log lines in the same shape as the copier's."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {"event": record.getMessage(), "logger": record.name}
        event["level"] = record.levelname.lower()
        return to_json(dict(_virtual_time(None, "", event)))


# ------------------------------------------------------------------------------------------------ cli


def parse_seeds(text: str) -> list[int]:
    """``7`` or ``1..200`` (inclusive)."""
    lo, sep, hi = text.partition("..")
    try:
        first = int(lo)
        last = int(hi) if sep else first
    except ValueError:
        raise ValueError(f"seeds must be N or A..B, got {text!r}") from None
    if last < first:
        raise ValueError(f"empty seed range {text!r}")
    return list(range(first, last + 1))


def _line(summary: dict[str, Any]) -> str:
    f = summary["faults"]
    c = f["crashes"]
    return (
        f"seed {summary['seed']}: {'ok' if simulation_ok(summary) else 'FAILED'} "
        f"trades={summary['master_trades']} copied={summary['copied']}/{summary['expected_copies']} "
        f"omitted={summary['omitted']} lost={summary['lost']} duplicates={summary['duplicates']} "
        f"open_after={summary['open_after']} settled={summary['settled']} "
        f"virtual={summary['virtual_seconds']}s faults: drop={f['dropped']} dup={f['duplicated']} "
        f"reorder={f['reordered']} disconnect={f['disconnects']} "
        f"crash={c['copier']}/{c['slave']}/{c['master']}"
    )


def main(opts: SimOptions, *, seeds: list[int] | None = None, json_out: bool = False) -> int:
    """One seed: a summary (JSON with ``json_out``), exit status 1 on any copy error. Several seeds: one line
    each and a final JSON object with the counts."""
    if seeds is None:
        summary = run_simulation(opts)
        if json_out:
            sys.stdout.write(json.dumps(summary) + "\n")
        else:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        sys.stdout.flush()
        if simulation_ok(summary):
            return 0
        print(f"simulate: seed {opts.seed} FAILED: {first_problem(summary)}", file=sys.stderr)
        return 1
    failed: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    started = time.perf_counter()  # reporting only: the simulations themselves never read the wall clock
    for seed in seeds:
        t = time.perf_counter()
        store_url = seed_store(opts.store_url, seed)
        discard_store(store_url)
        summary = run_simulation(dataclasses.replace(opts, seed=seed, store_url=store_url))
        if simulation_ok(summary):
            discard_store(store_url)
        print(f"{_line(summary)} wall={time.perf_counter() - t:.2f}s", flush=True)
        for key in (
            "master_trades",
            "expected_copies",
            "copied",
            "omitted",
            "lost",
            "duplicates",
            "open_after",
        ):
            totals[key] += summary[key]
        f = summary["faults"]
        for key in ("dropped", "duplicated", "reordered", "disconnects"):
            totals[key] += f[key]
        for key, n in f["crashes"].items():
            totals[f"crash_{key}"] += n
        if not simulation_ok(summary):
            failed.append({"seed": seed, "first_problem": first_problem(summary)})
            kept = f" (its store is kept: {store_url})" if store_url != "memory://" else ""
            print(
                f"simulate: seed {seed} FAILED: {first_problem(summary)}{kept}", file=sys.stderr, flush=True
            )
    result = {
        "seeds": len(seeds),
        "ok": len(seeds) - len(failed),
        "failed": failed,
        "totals": dict(totals),
        "faults_spec": str(opts.faults),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return 0 if not failed else 1
