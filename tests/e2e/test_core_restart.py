"""The copier process dies mid-traffic and starts again on the same store: nothing is lost or duplicated.

Core rebuilds open trades, slave tickets, handled master events and pending commands from the store; the
terminals reconnect and re-handshake; the master re-sends what was not acknowledged; Core re-sends what was
not answered with the same command_ids; the slave answers repeats from memory."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.app.root import Copier, run_all_in_one
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_copier_restarts_mid_traffic(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()  # the "disk": it outlives the copier process
    listener = MemoryPipeListener()
    config = Config(agent=AgentConfig(agent_id="agent-1"))
    clock = TrioClock()
    rng = random.Random(seed)
    market = SimMarket(random.Random(seed))
    copiers: list[Copier] = []

    async def copier_process(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                copiers.append(
                    await n.start(
                        lambda task_status: run_all_in_one(
                            config, store=store, listener=listener, clock=clock, task_status=task_status
                        )
                    )
                )
                task_status.started(scope)

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            process: trio.CancelScope = await nursery.start(copier_process)
            slaves = [
                SimSlaveEA(
                    f"5100{i}",
                    slave_broker(i, market, random.Random(rng.random())),
                    listener.connect,
                    clock.now_ms,
                )
                for i in range(3)
            ]
            for s in slaves:
                await nursery.start(s.run)
            master = SimMasterEA(
                "9001",
                master_broker(market, random.Random(rng.random())),
                listener.connect,
                clock.now_ms,
                random.Random(rng.random()),
            )
            await nursery.start(master.run)
            core = copiers[-1].core
            everyone = ["9001", *(s.account_id for s in slaves)]
            await core.wait_for(lambda: all(a in core.accounts and core.accounts[a].online for a in everyone))

            script_done = trio.Event()

            async def trade() -> None:
                await master.run_script(20, max_open=3, pace=0.1)
                script_done.set()

            nursery.start_soon(trade)
            for _ in range(2):  # two crashes at different points of the script
                await trio.sleep(rng.uniform(0.3, 1.2))
                process.cancel()  # the process dies: in-memory state is gone, the store keeps what committed
                await trio.sleep(rng.uniform(0.1, 2.0))
                process = await nursery.start(copier_process)
            await script_done.wait()
            await master.wait_all_acked()
            core = copiers[-1].core
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)

            trade_ids = set(master.trades)
            assert len(trade_ids) == 20
            for s in slaves:
                fills = Counter(
                    r.trade_id for r in s.results.values() if isinstance(r, m.ExecutionResult) and r.success
                )
                assert set(fills) == trade_ids, (s.account_id, trade_ids - set(fills))
                assert max(fills.values()) == 1, s.account_id
                assert s.broker.open_orders() == [], s.account_id
            assert all(t.status == "closed" for t in await store.trades(limit=100))
            nursery.cancel_scope.cancel()
