"""Core's router under a burst: events turned away with ERR_BROKER_BUSY come back as copies."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import trio
import trio.testing

from echo.adapters.store.memory import MemoryStore
from echo.domain.config import RouterConfig
from echo.domain.types import Side
from echo.ports.store import Batch
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
        router=RouterConfig(worker_pool_size=2, queue_depth_max=4, worker_timeout_ms=50),
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

            for ms in masters:
                for trade_id in list(ms.trades):
                    await ms.close(trade_id)
            for ms in masters:
                await ms.wait_all_acked()
            await w.settled()
            assert all(s.broker.open_orders() == [] for s in slaves)
            nursery.cancel_scope.cancel()
