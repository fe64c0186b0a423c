"""Core's router under a burst: events turned away with ERR_BROKER_BUSY come back as copies."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
import trio
import trio.testing

from echo.adapters.store.memory import MemoryStore
from echo.domain.config import AgentConfig, Config, RouterConfig
from echo.domain.types import Side
from echo.ports.store import Batch
from echo.services.agent import connection
from echo.services.agent.service import Agent
from echo.services.core.service import Core
from echo.sim.master import SimMasterEA
from echo.sim.slave import SimSlaveEA
from tests.e2e.world import e2e_config, fills, start_world

pytestmark = pytest.mark.e2e


class SlowDiskStore(MemoryStore):
    """A memory store whose every write takes ``delay_s`` (a slow disk), so work piles up behind it."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.writes = 0

    async def write(self, batch: Batch) -> None:
        self.writes += 1
        await trio.sleep(self.delay_s)
        await super().write(batch)


async def test_a_burst_beyond_the_queues_is_turned_away_busy_and_retried_into_copies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SlowDiskStore(0.05)
    config = e2e_config(
        router=RouterConfig(
            worker_pool_size=2, queue_depth_max=4, worker_timeout_ms=50, max_behind_ms=60_000
        ),
    )
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, 21, config=config, store=store)
            copier = w.copier
            slaves = [await w.add_slave(f"5100{i}", i) for i in range(3)]
            masters = [await w.add_master(f"900{i}") for i in range(3)]
            await w.online(*(ms.account_id for ms in masters), *(s.account_id for s in slaves))

            # 3 masters x 10 opens at the same instant: far more than 2 workers x 4 places
            opened: list[str] = []

            async def burst(master: object) -> None:
                for _ in range(10):
                    opened.append(await master.open("EURUSD", Side.BUY, 0.1))  # type: ignore[attr-defined]

            async with trio.open_nursery() as openers:
                for ms in masters:
                    openers.start_soon(burst, ms)
            for ms in masters:
                await ms.wait_all_acked()
            core = copier.core
            await core.wait_for(lambda: core.in_flight == 0 and len(core.trades) == 30)

            stats = core.router.stats
            assert stats.rejected_busy > 0, "the burst fit in the queues; it proves nothing"
            assert core.stats["router_busy"] == stats.rejected_busy
            # every turned-away intent came back and was copied exactly once on every slave
            for s in slaves:
                assert fills(s) == Counter({t: 1 for t in opened}), s.account_id
            # each rejection is recorded with the worker and its queue depth, and queryable
            busy = [e for e in await store.events(limit=10_000) if e.kind == "router_busy"]
            assert len(busy) == stats.rejected_busy
            data = json.loads(busy[0].data)
            assert data["queue_depth"] == 4 and data["worker_id"] in (0, 1)
            assert data["message"] == "TradeIntent"
            assert {e.trade_id for e in busy} <= set(opened)
            # both workers carried trades
            assert all(n > 0 for n in stats.per_worker)
            decisions = Counter(d.decision for d in await store.decisions(limit=10_000))
            assert decisions == {"copy": 90}

            await close_all(masters)
            await w.settled()
            assert all(s.broker.open_orders() == [] for s in slaves)
            nursery.cancel_scope.cancel()


async def close_all(masters: list[SimMasterEA]) -> None:
    """Each master closes every trade it has open, then waits until Core acknowledged them all."""
    for ms in masters:
        for trade_id in list(ms.trades):
            await ms.close(trade_id)
    for ms in masters:
        await ms.wait_all_acked()


async def _burst_then_close(
    config: Config, seed: int, n_slaves: int, opens: int
) -> tuple[Core, Agent, list[SimSlaveEA], list[SimMasterEA], int]:
    """3 masters each open ``opens`` trades at once to ``n_slaves`` slaves, then close them all. Every open
    and close lands once on every slave and no terminal reconnects; returns Core, the Agent, the
    terminals and how many events were turned away busy while the closes went through (must be 0)."""
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, seed, config=config)
        core, agent = w.copier.core, w.copier.agent
        slaves = [await w.add_slave(f"5200{i}", i) for i in range(n_slaves)]
        masters = [await w.add_master(f"920{i}") for i in range(3)]
        await w.online(*(ms.account_id for ms in masters), *(s.account_id for s in slaves))
        opened: list[str] = []

        async def burst(master: SimMasterEA) -> None:
            for _ in range(opens):
                opened.append(await master.open("EURUSD", Side.BUY, 0.1))

        async with trio.open_nursery() as openers:
            for ms in masters:
                openers.start_soon(burst, ms)
        for ms in masters:
            await ms.wait_all_acked()
        await core.wait_for(lambda: core.in_flight == 0 and len(core.trades) == 3 * opens)
        for s in slaves:
            assert fills(s) == Counter({t: 1 for t in opened}), s.account_id
        stats = core.router.stats
        busy_before = stats.rejected_busy
        await close_all(masters)
        await w.settled()
        assert all(s.broker.open_orders() == [] for s in slaves)
        assert all(t.connections == 1 for t in [*slaves, *masters]), "a terminal was cut off"
        nursery.cancel_scope.cancel()
    return core, agent, slaves, masters, stats.rejected_busy - busy_before


async def test_past_max_in_flight_opens_are_turned_away_and_closes_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Core bounded at 12 unanswered commands: a burst of 3 masters x 12 opens to 4 slaves is admitted a
    part at a time (the rest RETRY / ERR_BROKER_BUSY and comes back), then every close is admitted."""
    config = e2e_config(router=RouterConfig(max_in_flight=12, queue_depth_max=128))
    with trio.fail_after(600):
        core, _, _, _, closes_turned_away = await _burst_then_close(config, 22, 4, 12)
    assert core.router.stats.rejected_in_flight > 0, "the burst fit under the bound; it proves nothing"
    assert closes_turned_away == 0


async def test_a_terminal_whose_outbox_is_full_is_held_for_not_cut_off(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terminals' outboxes of 16 lines (12 for commands) and a burst of 3 masters x 16 opens to 2 slaves:
    the commands that find an outbox full wait in the Agent (Core hears they are buffered) and go out in
    order as the terminal reads, instead of the terminal being disconnected as too slow."""
    config = dataclasses.replace(
        e2e_config(router=RouterConfig(queue_depth_max=128)),
        agent=AgentConfig(agent_id="agent-e2e", outbox_lines=16),
    )
    # the writer takes one line per turn, as a terminal busy elsewhere would (in-memory pipes never block)
    monkeypatch.setattr(connection, "WRITE_BATCH", 1)
    with trio.fail_after(600):
        _, agent, _, _, _ = await _burst_then_close(config, 23, 2, 16)
    assert agent.stats.get("terminal_busy", 0) > 0, "no outbox filled; it proves nothing"
