"""Bounded growth: a closed trade leaves Core's memory (only its id stays, for dedupe), and the store purges
it ``store.retention_days`` after it closed, while ``explain`` keeps working for every trade inside that.

The all-in-one copier with simulated terminals on trio's MockClock and in-memory pipes."""

from __future__ import annotations

import random
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.sqlite import SqliteStore
from echo.app import explain
from echo.app.root import Copier
from echo.domain.config import AgentConfig, Config, CoreConfig, StoreConfig
from echo.domain.types import Side
from echo.ports.store import Store
from echo.services.core.service import Core
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.slave import SimSlaveEA
from tests.e2e.world import master_terminal, slave_terminal, start_copier, wait_online

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
SLAVES = 3


class ShiftedClock(TrioClock):
    """Trio's clock, plus days the test moves it on by (the copier sees the days pass at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.shift_ms = 0

    def now_ms(self) -> int:
        return super().now_ms() + self.shift_ms


@dataclass
class World:
    copier: Copier
    store: Store
    clock: ShiftedClock
    master: SimMasterEA
    slaves: list[SimSlaveEA]

    @property
    def core(self) -> Core:
        return self.copier.core

    async def trade(self) -> str:
        """One trade copied to every slave and closed everywhere."""
        core = self.core
        trade_id = await self.master.open("EURUSD", Side.BUY, 0.1)
        await core.wait_for(lambda: trade_id in core.trades and core.in_flight == 0)
        await self.master.wait_all_acked()
        await self.master.close(trade_id)
        await self.master.wait_all_acked()
        await core.wait_for(lambda: not core.trades and core.in_flight == 0)
        return trade_id


@asynccontextmanager
async def world(nursery: trio.Nursery, config: Config, store: Store | None = None) -> AsyncIterator[World]:
    store = store or MemoryStore()
    listener, clock = MemoryPipeListener(), ShiftedClock()
    copier = await start_copier(nursery, config, store=store, listener=listener, clock=clock)
    rng = random.Random(5)
    market = SimMarket(random.Random(5))
    slaves = [
        slave_terminal(f"5100{i}", i, market, rng.random(), listener.connect, clock.now_ms)
        for i in range(SLAVES)
    ]
    master = master_terminal("9001", market, 6, 7, listener.connect, clock.now_ms)
    for terminal in [*slaves, master]:
        await nursery.start(terminal.run)
    await wait_online(copier.core, "9001", *(s.account_id for s in slaves))
    yield World(copier, store, clock, master, slaves)


def held_by_core(core: Core) -> dict[str, int]:
    """The size of every collection Core keeps, but its event counters and the trade ids kept for dedupe."""
    sizes: dict[str, int] = {}
    collections = (dict, set, list, deque)
    for name, value in vars(core).items():
        if isinstance(value, collections) and name not in ("stats", "_seen_trade_ids"):
            sizes[name] = len(value)
    for account_id, acc in core.accounts.items():
        for name, value in vars(acc).items():
            if isinstance(value, collections):
                sizes[f"{account_id}.{name}"] = len(value)
    return sizes


async def test_closed_trades_leave_cores_memory_but_their_ids(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(agent=AgentConfig(agent_id="agent-1", ledger_url="memory://"))
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery, world(nursery, config) as w:
            for _ in range(5):
                await w.trade()
            warm = held_by_core(w.core)
            seen_before = w.core.remembered[0]
            for _ in range(40):
                await w.trade()
            grown = {k: (warm.get(k, 0), n) for k, n in held_by_core(w.core).items() if n > warm.get(k, 0)}
            assert grown == {}, f"Core holds more after 40 more closed trades: {grown}"
            # what dedupe needs: one id per trade, nothing per command or per slave
            assert w.core.remembered == (seen_before + 40, 0)
            agent = w.copier.agent
            assert agent.held == {}
            nursery.cancel_scope.cancel()


async def test_closed_trades_are_purged_after_retention_and_explained_before(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Core, "RETENTION_EVERY_S", 60.0)  # hourly in production
    config = Config(
        core=CoreConfig(dedupe_window_ms=3_600_000),
        agent=AgentConfig(agent_id="agent-1", ledger_url="memory://"),
        store=StoreConfig(url="memory://", retention_days=2),
    )
    with trio.fail_after(3 * Core.RETENTION_EVERY_S):
        async with trio.open_nursery() as nursery, world(nursery, config) as w:
            old = [await w.trade() for _ in range(3)]
            w.clock.shift_ms += 2 * DAY_MS + 60_000
            recent = await w.trade()
            still_open = await w.master.open("EURUSD", Side.SELL, 0.1)
            core = w.core
            await core.wait_for(lambda: still_open in core.trades and core.in_flight == 0)
            store = w.store

            def rows(trade_id: str) -> Callable[[], object]:
                async def read() -> list[object]:
                    return [
                        *await store.commands(trade_id),
                        *await store.events(trade_id),
                        *await store.decisions(trade_id),
                        *await store.tickets(trade_id),
                        *[j for j in await store.journal(None) if j.trade_id == trade_id],
                    ]

                return read

            before = await explain.receipt(store, old[0])
            assert before["copied"] == SLAVES
            assert await rows(old[0])()
            await trio.sleep(Core.RETENTION_EVERY_S + 1)
            for trade_id in old:
                with pytest.raises(explain.UnknownTrade):
                    await explain.receipt(store, trade_id)
                assert await rows(trade_id)() == [], trade_id
            for trade_id in (recent, still_open):
                receipt = await explain.receipt(store, trade_id)
                assert receipt["copied"] == SLAVES, trade_id
                assert all(s["execution"]["ticket"] for s in receipt["slaves"]), receipt
            assert (await explain.receipt(store, recent))["trade"]["status"] == "closed"
            # a purged trade's id is too old to come back as new
            assert core.remembered[0] >= 1
            nursery.cancel_scope.cancel()


def bytes_in_use(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        pages = (
            conn.execute("PRAGMA page_count").fetchone()[0]
            - conn.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


async def test_a_slave_copy_costs_at_most_3_kb_of_store(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Every row a copy leaves (decision, commands and results, journal, tickets, events) and its share of
    the trade's, indexes included, on SQLite."""
    db = tmp_path / "echo.db"
    store = SqliteStore.open(db)
    config = Config(agent=AgentConfig(agent_id="agent-1", ledger_url="memory://"))
    trades = 60
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery, world(nursery, config, store) as w:
            await w.trade()
            start = bytes_in_use(db)
            for _ in range(trades):
                await w.trade()
            per_copy = (bytes_in_use(db) - start) / (trades * SLAVES)
            nursery.cancel_scope.cancel()
    await store.aclose()
    assert per_copy <= 3072, f"{per_copy:.0f} bytes of store per slave copy"
