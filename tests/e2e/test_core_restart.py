"""The copier process dies mid-traffic and starts again on the same store: nothing is lost or duplicated.

Core rebuilds open trades, slave tickets, handled master events and pending commands from the store; the
terminals reconnect and re-handshake; the master re-sends what was not acknowledged; Core re-sends what was
not answered with the same command_ids; the slave answers repeats from memory."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, CoreConfig, DeliverySettings
from echo.domain.types import Side
from echo.sim import strategy
from echo.sim.broker import SimBroker
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import slave_broker
from echo.sim.slave import SimSlaveEA
from tests.e2e.world import (
    CopierProcess,
    fills,
    master_terminal,
    slave_terminal,
    wait_online,
    wait_settled,
)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("seed", "ledger_on_disk"),
    [(1, True), (2, True), (3, True), (4, True), (5, False), (6, False), (7, False)],
)
async def test_copier_restarts_mid_traffic(
    seed: int, ledger_on_disk: bool, autojump_clock: trio.testing.MockClock
) -> None:
    # the store and the Agent's ack ledger are the "disk": they outlive the copier process. Without the
    # ledger on disk (the all-in-one default) the journal alone must bring every copy in exactly once.
    proc = CopierProcess(Config(agent=AgentConfig(agent_id="agent-1")), ledger_on_disk=ledger_on_disk)
    store, listener, clock = proc.store, proc.listener, proc.clock
    rng = random.Random(seed)
    market = SimMarket(random.Random(seed))

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            process: trio.CancelScope = await nursery.start(proc.run)
            slaves = [
                slave_terminal(f"5100{i}", i, market, rng.random(), listener.connect, clock.now_ms)
                for i in range(3)
            ]
            for s in slaves:
                await nursery.start(s.run)
            master = master_terminal(
                "9001", market, rng.random(), rng.random(), listener.connect, clock.now_ms
            )
            await nursery.start(master.run)
            await wait_online(proc.core, "9001", *(s.account_id for s in slaves))

            script_done = trio.Event()

            async def trade() -> None:
                await master.run_script(20, max_open=3, pace=0.1)
                script_done.set()

            nursery.start_soon(trade)
            for _ in range(2):  # two crashes at different points of the script
                await trio.sleep(rng.uniform(0.3, 1.2))
                process.cancel()  # the process dies: in-memory state is gone, the store keeps what committed
                await trio.sleep(rng.uniform(0.1, 2.0))
                process = await nursery.start(proc.run)
            await script_done.wait()
            await master.wait_all_acked()
            await wait_settled(proc.core)

            trade_ids = set(master.trades)
            assert len(trade_ids) == 20
            for s in slaves:
                copies = fills(s)
                assert set(copies) == trade_ids, (s.account_id, trade_ids - set(copies))
                assert max(copies.values()) == 1, s.account_id
                assert s.broker.open_orders() == [], s.account_id
            assert all(t.status == "closed" for t in await store.trades(limit=100))
            nursery.cancel_scope.cancel()


async def copied_then_slave_away(
    proc: CopierProcess, nursery: trio.Nursery, market: SimMarket, broker: SimBroker
) -> tuple[SimMasterEA, str]:
    """Master 9001 and slave 51001 online, one GER30 trade copied, then the slave's terminal gone."""
    master = master_terminal("9001", market, 2, 3, proc.listener.connect, proc.clock.now_ms)
    await nursery.start(master.run)
    async with trio.open_nursery() as terminal:
        await terminal.start(SimSlaveEA("51001", broker, proc.listener.connect, proc.clock.now_ms).run)
        core = proc.core
        await core.wait_for(lambda: {"9001", "51001"} <= {a for a, x in core.accounts.items() if x.online})
        trade_id = await master.open("GER30", Side.BUY, 1.0)
        await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("copied") == 1)
        terminal.cancel_scope.cancel()
    await core.wait_for(lambda: not core.accounts["51001"].online)
    return master, trade_id


async def test_operations_queued_behind_a_command_in_flight_survive_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A partial close goes out to an offline slave and waits; the master's SL change that follows queues
    behind it. The copier dies, starts again, the slave returns: the close is applied once and the SL
    change too (it was recorded as a master event not yet applied to that slave)."""
    proc = CopierProcess(Config(core=CoreConfig(fixed_lot=1.0), agent=AgentConfig(agent_id="agent-1")))
    market = SimMarket(random.Random(9))
    broker = slave_broker(1, market, random.Random(1))
    async with trio.open_nursery() as nursery:
        process: trio.CancelScope = await nursery.start(proc.run)
        master, trade_id = await copied_then_slave_away(proc, nursery, market, broker)
        core = proc.core
        await master.partial_close(trade_id, 0.4)
        sl, tp = strategy.random_stops(master, "GER30", Side.BUY)
        await master.modify(trade_id, sl, tp)
        await master.wait_all_acked()
        position = core.trades[trade_id].positions["51001"]
        assert len(position.in_flight) == 1 and [op.kind for op in position.queue] == ["modify"]

        process.cancel()
        await trio.sleep(1)
        process = await nursery.start(proc.run)
        slave = SimSlaveEA("51001", broker, proc.listener.connect, proc.clock.now_ms)
        await nursery.start(slave.run)
        core = proc.core
        await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("slave_closes") == 1)
        await core.wait_for(
            lambda: core.in_flight == 0 and not core.trades[trade_id].positions["51001"].queue
        )
        (order,) = broker.open_orders()
        assert order.lots == pytest.approx(0.6)
        assert (order.stop_loss, order.take_profit) != (None, None)
        closes = [r for r in slave.results.values() if isinstance(r, m.CloseResult)]
        assert len(closes) == 1
        await master.close(trade_id)
        await master.wait_all_acked()
        await core.wait_for(lambda: not core.trades and core.in_flight == 0)
        assert broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_a_close_waiting_for_an_offline_slave_survives_two_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The slave is offline when the master closes, Core gives the close up after its retries, and the
    copier restarts twice before the slave returns: the slave's position is still closed once it is back
    (the trade is closed at the master and no command is pending: only the slave's open ticket says there
    is work left)."""
    proc = CopierProcess(
        Config(
            core=CoreConfig(fixed_lot=1.0),
            agent=AgentConfig(agent_id="agent-1"),
            delivery=DeliverySettings(ack_timeout_ms=100, retry_backoff_ms=50, max_retries=2),
        )
    )
    market = SimMarket(random.Random(11))
    broker = slave_broker(1, market, random.Random(1))
    async with trio.open_nursery() as nursery:
        process: trio.CancelScope = await nursery.start(proc.run)
        master, trade_id = await copied_then_slave_away(proc, nursery, market, broker)
        core = proc.core
        await master.close(trade_id)
        await master.wait_all_acked()
        # the slave stays away long enough for Core to give the close up (it would revive it when the
        # slave returns, but only the store remembers it across a restart)
        await trio.sleep(3600)
        assert core.in_flight == 0 and core.stats.get("gave_up") == 1, core.stats
        for _ in range(2):
            process.cancel()
            await trio.sleep(1)
            process = await nursery.start(proc.run)
            restarted = proc.core
            await restarted.wait_for(lambda c=restarted: c.accounts["9001"].online)  # type: ignore[misc]
            core = restarted
        assert trade_id in core.trades, "the restart forgot the slave's open position"
        assert len(broker.open_orders()) == 1
        await nursery.start(SimSlaveEA("51001", broker, proc.listener.connect, proc.clock.now_ms).run)
        await core.wait_for(lambda: not core.trades and core.in_flight == 0)
        assert broker.open_orders() == []
        nursery.cancel_scope.cancel()
