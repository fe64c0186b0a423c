"""End-to-end: the all-in-one copier (Core + Agent + pipe server) with simulated terminals.

On trio's MockClock with in-memory pipes (deterministic), and on real Unix sockets with SQLite."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from echo.adapters.store.memory import MemoryStore
from echo.domain import messages as m
from echo.domain.config import Config, StoreConfig
from echo.domain.ids import trade_id_from_comment
from echo.domain.types import Side
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.e2e.world import FlakyStore, e2e_config, fills, start_world

pytestmark = pytest.mark.e2e


async def test_every_trade_copied_once_and_closed_on_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, seed=3)
            slaves = [await w.add_slave(f"5100{i}", i) for i in range(4)]
            master = await w.add_master("9001")
            await w.online("9001", *(s.account_id for s in slaves))
            await master.run_script(25, max_open=3, pace=0.05)
            await w.settled()

            trade_ids = set(master.trades)
            assert len(trade_ids) == 25
            for s in slaves:
                f = fills(s)
                assert set(f) == trade_ids, f"{s.account_id} missed {trade_ids - set(f)}"
                assert max(f.values()) == 1, "a trade was filled twice"
                assert s.broker.open_orders() == [], f"{s.account_id} still has positions open"
                # every slave order carries its trade_id in the comment, remainders included
                for order in s.broker.history:
                    assert trade_id_from_comment(order.comment) in trade_ids
            assert master.partials > 0 and master.modifies > 0

            store = w.copier.store
            decisions = await store.decisions(limit=10_000)
            assert Counter(d.decision for d in decisions) == {"copy": 100}
            trades = await store.trades(limit=100)
            assert {t.trade_id for t in trades} == trade_ids
            assert all(t.status == "closed" for t in trades)
            # partial closes were mapped onto the remainder tickets MT4 issues
            tickets = [t for trade_id in trade_ids for t in await store.tickets(trade_id)]
            remainders = [t for t in tickets if t.parent_ticket is not None]
            assert remainders, "no partial close reached a slave"
            assert all(t.status == "closed" for t in tickets)
            nursery.cancel_scope.cancel()


async def test_symbol_not_mapped_is_omitted_with_reason(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        slave = await w.add_slave("51001", 0)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        # as if the slave's broker did not list gold: the copy is omitted and the receipt says why
        w.copier.core.accounts["51001"].symbols.pop("XAUUSD")
        with capture_logs() as logs:
            trade_id = await master.open("XAUUSD", Side.BUY, 0.5)
            await master.wait_all_acked()
            await master.close(trade_id)
            await master.wait_all_acked()
            await w.settled()
        decisions = await w.copier.store.decisions(trade_id)
        assert [(d.account_id, d.decision, d.reason) for d in decisions] == [
            ("51001", "omit", "symbol_not_mapped")
        ]
        assert fills(slave) == Counter()
        fanout = [e for e in logs if e["event"] == "core_trade_fanout"]
        assert fanout and fanout[0]["omitted"][0]["reason"] == "symbol_not_mapped"
        nursery.cancel_scope.cancel()


async def test_close_before_fill_still_closes_the_slave(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        slave = await w.add_slave("51001", 1)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        trade_id = await master.open("EURUSD", Side.SELL, 1.0)
        await master.close(trade_id)  # written right behind the intent, before the slave's fill is back
        await master.wait_all_acked()
        await w.settled()
        assert fills(slave) == Counter({trade_id: 1})
        assert slave.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_slave_that_reconnects_rehandshakes_and_keeps_copying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        slave = await w.add_slave("51001", 2)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        first = await master.open("GER30", Side.BUY, 0.5)
        await master.wait_all_acked()
        await w.copier.core.wait_for(lambda: w.copier.core.in_flight == 0)
        connections_before = slave.connections
        # the agent drops the slave's connection (as when a terminal restarts or a pipe breaks)
        w.copier.agent.connections["51001"].cancel.cancel()
        await w.copier.core.wait_for(lambda: not w.copier.core.accounts["51001"].online)
        await w.online("51001")
        assert slave.connections == connections_before + 1
        second = await master.open("US100", Side.SELL, 0.5)
        for t in (first, second):
            await master.close(t)
        await master.wait_all_acked()
        await w.settled()
        assert fills(slave) == Counter({first: 1, second: 1})
        assert slave.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_duplicate_intent_is_acked_as_duplicate_and_not_copied_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        slave = await w.add_slave("51001", 0)
        await w.add_master("9001")
        await w.online("9001", "51001")
        from echo.domain.ids import trace_id_from, uuid7
        from echo.pipe.codec import AGENT_TO_EA, Decoded, LineDecoder, encode

        stream = await w.listener.connect()
        await stream.send_all(encode(m.Handshake("9002", m.Role.MASTER, protocol_version=2), 0))
        await w.online("9002")
        intent = m.TradeIntent(
            uuid7(w.clock.now_ms(), b"\x01" * 10),
            trace_id_from(b"\x02" * 16),
            "XAUUSD",
            Side.BUY,
            0.2,
            2350.0,
            7,
            123,
        )
        await stream.send_all(encode(intent, 0) * 2)
        decoder = LineDecoder(AGENT_TO_EA)
        acks: list[m.TradeIntentAck] = []
        while len(acks) < 2:
            acks += [
                e.payload
                for e in decoder.feed(await stream.receive_some())
                if isinstance(e, Decoded) and isinstance(e.payload, m.TradeIntentAck)
            ]
        assert [a.status for a in acks] == [m.AckStatus.OK, m.AckStatus.DUPLICATE]
        await w.copier.core.wait_for(lambda: w.copier.core.in_flight == 0)
        assert fills(slave) == Counter({intent.trade_id: 1})
        nursery.cancel_scope.cancel()


def _ledger_files(folder: Path) -> list[Path]:
    return list(folder.rglob("*ledger*"))


async def test_demo_on_real_sockets_and_sqlite(tmp_path: Path) -> None:
    from rich.console import Console

    from echo.adapters.store.sqlite import SqliteStore
    from echo.app.demo import DemoOptions, demo_ok, print_summary, run_demo

    opts = DemoOptions(masters=2, slaves=3, trades=12, seed=5, workdir=tmp_path, pace=0.01)
    with trio.fail_after(60):
        summary = await run_demo(opts, Console(quiet=True))
    assert summary["expected_copies"] == 36
    assert summary["copied"] == summary["expected_copies"]
    assert (summary["lost"], summary["duplicates"], summary["open_after"]) == (0, 0, 0)
    assert demo_ok(summary)
    assert summary["copy_latency_ms"]["n"] == 36
    assert (tmp_path / "seed-5" / "echo.db").exists()
    assert not _ledger_files(tmp_path), "all-in-one keeps the Agent's ledger in memory"
    # "closed" counts copies, "close_fills" close orders (each closes one slave ticket; partials too)
    assert summary["closed"] == summary["copied"]
    store = SqliteStore.open(tmp_path / "seed-5" / "echo.db")
    try:
        tickets = [t for tr in await store.trades(limit=100) for t in await store.tickets(tr.trade_id)]
    finally:
        await store.aclose()
    assert summary["close_fills"] == sum(t.status == "closed" for t in tickets) >= summary["closed"]
    console = Console(record=True, width=200)
    print_summary(summary, console)
    table = console.export_text()
    assert "copies closed" in table and "close fills at slaves (partial closes included)" in table


async def test_unrecorded_messages_are_retried_by_the_master_and_copied_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FlakyStore()
    config = e2e_config()
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 9, config=config, store=store)
        copier = w.copier
        slave = await w.add_slave("51001", 0)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        # the intent's fan-out cannot be recorded, even after Core's retries: nothing may leave, the master
        # retries
        store.fail_next = 4
        trade_id = await master.open("XAUUSD", Side.BUY, 0.4)
        await master.wait_all_acked()
        await copier.core.wait_for(lambda: copier.core.in_flight == 0)
        assert fills(slave) == Counter({trade_id: 1})
        assert copier.core.stats["store_failures"] == 1
        store.fail_next = 4  # the same for the close
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert slave.broker.open_orders() == []
        assert copier.core.stats["store_failures"] == 2
        nursery.cancel_scope.cancel()


async def test_delivery_settings_change_without_restart(autojump_clock: trio.testing.MockClock) -> None:
    from echo.delivery.machine import Settings

    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        slave = await w.add_slave("51001", 0)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        assert master.settings.ack_timeout_ms == 1000
        new = Settings(ack_timeout_ms=250, retry_backoff_ms=50, max_retries=7)
        await w.copier.core.set_delivery(new, 1500)
        await trio.testing.wait_all_tasks_blocked()
        assert (master.settings.ack_timeout_ms, master.settings.max_retries) == (250, 7)
        assert slave.delivery_config is not None and slave.delivery_config.heartbeat_interval_ms == 1500
        assert w.copier.core.delivery.ack_timeout_ms == 250
        # and a terminal that connects later hears the new settings too
        late = await w.add_slave("51002", 1)
        await w.online("51002")
        await trio.testing.wait_all_tasks_blocked()
        assert late.delivery_config is not None and late.delivery_config.ack_timeout_ms == 250
        nursery.cancel_scope.cancel()


async def test_a_brief_store_outage_is_absorbed_by_core_retrying_the_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FlakyStore()
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 5, config=Config(store=StoreConfig("memory://")), store=store)
        copier = w.copier
        slave = await w.add_slave("51001", 0)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        store.fail_next = 2
        trade_id = await master.open("EURUSD", Side.SELL, 0.2)
        await master.wait_all_acked()
        await copier.core.wait_for(lambda: copier.core.in_flight == 0)
        assert fills(slave) == Counter({trade_id: 1})
        assert copier.core.stats["journal_retries"] == 2 and "store_failures" not in copier.core.stats
        assert master.resends == 0
        nursery.cancel_scope.cancel()


async def test_a_trade_for_an_offline_slave_waits_in_the_agent_ledger_until_it_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        core, agent = w.copier.core, w.copier.agent
        broker = slave_broker(2, w.market, random.Random(5))
        async with trio.open_nursery() as terminal:
            await terminal.start(SimSlaveEA("51001", broker, w.listener.connect, w.clock.now_ms).run)
            master = await w.add_master("9001")
            await w.online("9001", "51001")
            terminal.cancel_scope.cancel()  # the slave's terminal is closed
        await core.wait_for(lambda: not core.accounts["51001"].online)
        trade_id = await master.open("GER30", Side.BUY, 0.5)
        await master.wait_all_acked()
        await core.wait_for(lambda: bool(agent.held))
        await trio.testing.wait_all_tasks_blocked()
        (row,) = await w.copier.store.journal()
        assert (row.trade_id, row.account_id, row.stage) == (trade_id, "51001", "AGENT_BUFFERED")
        # the terminal starts again: the Agent writes the held command at its handshake
        again = SimSlaveEA("51001", broker, w.listener.connect, w.clock.now_ms)
        await nursery.start(again.run)
        await core.wait_for(lambda: core.in_flight == 0)
        assert fills(again) == Counter({trade_id: 1})
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert broker.open_orders() == [] and agent.held == {}
        nursery.cancel_scope.cancel()


async def test_policies_size_by_risk_and_windows_omit_with_a_receipt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One slave sizes gold by a fixed money risk from the master's stop; another is inside a no-trade
    window. The receipts in the store say what each got and why."""
    from echo.domain.policy import Policies, Policy, Window

    store = MemoryStore()
    policies = Policies(
        Policy(),
        {
            "51001": Policy(sizing="risk", risk_fixed=300.0),
            "51002": Policy(windows=(Window("*", "00:00", "23:59"),)),
        },
    )
    config = e2e_config(policy=policies)
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 3, config=config, store=store)
        copier = w.copier
        risk_slave = await w.add_slave("51001", 1)
        await w.add_slave("51002", 2)
        master = await w.add_master("9001")
        await w.online("9001", "51001", "51002")
        bid, _ = master.broker.quote("XAUUSD")
        trade_id = await master.open("XAUUSD", Side.BUY, 1.0, stop_loss=round(bid - 10.0, 2))
        await master.wait_all_acked()
        await copier.core.wait_for(lambda: copier.core.in_flight == 0)
        receipts = {d.account_id: d for d in await store.decisions(trade_id)}
        assert receipts["51002"].decision == "omit" and receipts["51002"].reason == "no_trade_window"
        copied = receipts["51001"]
        assert copied.decision == "copy" and copied.lot_size is not None, (copied.reason, copied.detail)
        detail = json.loads(copied.detail)
        assert detail["sizing"] == "risk" and detail["effective_risk"] <= 300.0
        assert copied.lot_size == 0.2  # 300 / 1025 per lot = 0.29, rounded down to the 0.1 step
        (order,) = risk_slave.broker.open_orders()
        assert order.lots == copied.lot_size
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert risk_slave.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_a_master_removing_its_sl_leaves_the_slaves_catastrophic_sl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from echo.domain.policy import Policies, Policy

    config = e2e_config(
        policy=Policies(Policy(catastrophic_sl=2000)),
    )
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 4, config=config)
        copier = w.copier
        slave = await w.add_slave("51001", 1)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        bid, _ = master.broker.quote("XAUUSD")
        trade_id = await master.open("XAUUSD", Side.BUY, 1.0, stop_loss=round(bid - 10.0, 2))
        await master.wait_all_acked()
        await copier.core.wait_for(lambda: copier.core.in_flight == 0)
        (order,) = slave.broker.open_orders()
        assert order.stop_loss == round(bid - 10.0, 2)  # the master's SL, copied
        await master.modify(trade_id, None, None)
        await master.wait_all_acked()
        await copier.core.wait_for(lambda: copier.core.in_flight == 0)
        (order,) = slave.broker.open_orders()
        spec = slave.broker.spec(order.symbol)
        assert order.stop_loss == pytest.approx(order.open_price - 2000 * spec.point), "safety net removed"
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        nursery.cancel_scope.cancel()


async def test_a_send_to_an_agent_that_is_gone_fails_that_command_and_core_serves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A slave's account is announced by an Agent that then has no connection (as when a gRPC stream
    breaks before its AccountOffline is handled): Core's send fails, the command is marked undelivered at
    the Agent's hop and sent again later, the other slave is served meanwhile, and once the terminal is
    back on a live Agent it gets the trade exactly once."""
    with trio.fail_after(600):
        await _stranded_slave_scenario()


async def _stranded_slave_scenario() -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, seed=6)
        core = w.copier.core
        healthy = await w.add_slave("51001", 0)
        stranded = SimSlaveEA(
            "51002", slave_broker(1, w.market, random.Random(7)), w.listener.connect, w.clock.now_ms
        )
        scope = trio.CancelScope()
        await w.start(stranded, scope)
        master = await w.add_master("9001")
        await w.online("9001", "51001", "51002")
        hs = core.accounts["51002"].handshake
        await trio.sleep(1)  # the reports are a second apart, as a terminal moving between hosts would be
        # an account moves only while it is offline at its Agent: the terminal left agent-e2e first
        await core.handle("agent-e2e", m.AccountOffline("agent-e2e", "51002", w.clock.now_ms()))
        await core.handle("agent-gone", m.AccountOnline("agent-gone", hs, w.clock.now_ms()))
        assert core.accounts["51002"].agent_id == "agent-gone"
        with capture_logs() as logs:
            trade_id = await master.open("XAUUSD", Side.BUY, 0.2)
            await master.wait_all_acked()
            await core.wait_for(lambda: fills(healthy) == Counter({trade_id: 1}))
        assert any(e["event"] == "core_agent_unavailable" and e["agent_id"] == "agent-gone" for e in logs)
        assert any(e["event"] == "core_command_not_delivered" for e in logs)
        # the dead Agent's stream ends (its accounts go offline), the terminal reconnects to the live Agent:
        # its handshake moves the account back
        scope.cancel()
        await core.handle("agent-gone", m.AccountOffline("agent-gone", "51002", w.clock.now_ms()))
        await trio.sleep(1)
        back = SimSlaveEA("51002", stranded.broker, w.listener.connect, w.clock.now_ms)
        await nursery.start(back.run)
        await core.wait_for(lambda: core.accounts["51002"].agent_id == "agent-e2e" and core.in_flight == 0)
        assert fills(stranded) + fills(back) == Counter({trade_id: 1})
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert healthy.broker.open_orders() == [] and stranded.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_slave_positions_closed_by_the_broker_are_recorded_and_never_reopened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One slave is stopped out, another's stop-loss is hit. Core closes those tickets with the reason,
    alerts, and does not reopen; the master's close later is a no-op there and closes the third slave."""
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        core = w.copier.core
        stopped, stop_hit, normal = [await w.add_slave(f"5100{i}", i) for i in (1, 2, 3)]
        master = await w.add_master("9001")
        await w.online("9001", "51001", "51002", "51003")
        trade_id = await master.open("XAUUSD", Side.BUY, 0.5)
        await master.wait_all_acked()
        await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("copied") == 3)

        with capture_logs() as logs:
            stopped.broker.stop_out(w.clock.now_ms())
            (order,) = stop_hit.broker.open_orders()
            order.stop_loss = stop_hit.broker.quote(order.symbol)[0] + 1.0  # the price is through it
            stop_hit.broker.auto_stops = True
            await core.wait_for(  # applied, and written (a batch that sends nothing may lag its count)
                lambda: (
                    core.stats.get("slave_stop_out") == 1
                    and core.stats.get("slave_sl") == 1
                    and core.recorded
                )
            )
        alerts = [e for e in logs if e["event"] == "core_slave_closed_by_broker"]
        assert {(e["slave"], e["reason"], e["log_level"]) for e in alerts} == {
            ("51001", "STOP_OUT", "error"),
            ("51002", "SL", "warning"),
        }
        events = [e for e in await w.copier.store.events(trade_id) if e.kind == "slave_closed_by_broker"]
        assert {e.account_id for e in events} == {"51001", "51002"}

        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        for slave in (stopped, stop_hit, normal):
            assert fills(slave) == Counter({trade_id: 1}), slave.account_id  # never reopened
            assert slave.broker.open_orders() == []
        closes = [r for r in normal.results.values() if isinstance(r, m.CloseResult)]
        assert len(closes) == 1
        assert not any(isinstance(r, m.CloseResult) for s in (stopped, stop_hit) for r in s.results.values())
        tickets = {(t.account_id, t.status) for t in await w.copier.store.tickets(trade_id)}
        assert tickets == {("51001", "closed"), ("51002", "closed"), ("51003", "closed")}
        nursery.cancel_scope.cancel()


async def test_stops_inside_the_stop_level_are_set_after_the_fill_once_the_price_allows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        await _stops_after_fill()


async def _stops_after_fill() -> None:
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery)
        core = w.copier.core
        slave = await w.add_slave("51001", 1)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        spec = next(s for s in slave.broker.specs.values() if s.canonical_symbol == "XAUUSD")
        assert spec.stop_level > 0
        bid, _ = slave.broker.quote(spec.broker_symbol)
        stop_loss = spec.round_price(bid - spec.stop_level * spec.point / 2)  # inside the slave's StopLevel
        with capture_logs() as logs:
            trade_id = await master.open("XAUUSD", Side.BUY, 0.5, stop_loss=stop_loss)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("copied") == 1)
            await core.wait_for(lambda: bool(core.accounts["51001"].stops_waiting))
        (order,) = slave.broker.open_orders()
        assert order.stop_loss is None  # opened without it: the broker would have refused the order
        receipt = next(d for d in await w.copier.store.decisions(trade_id) if d.account_id == "51001")
        assert json.loads(receipt.detail)["after_fill"] == [stop_loss, None]
        assert any(e["event"] == "core_stops_wait_for_price" for e in logs)

        w.market.set_mid("XAUUSD", w.market.mid("XAUUSD") + 50 * spec.stop_level * spec.point)
        await core.wait_for(lambda: not core.accounts["51001"].stops_waiting and core.in_flight == 0)
        (order,) = slave.broker.open_orders()
        assert order.stop_loss == stop_loss
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert slave.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_slippage_and_delay_limits_omit_and_a_window_never_blocks_a_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """51001 allows no slippage at all, 51002 no intent older than 3 s (this master's clock runs 5 s
    behind), 51003 copies; then a no-trade window covers everything and the master's close still goes
    through to 51003."""
    from echo.domain.policy import Policies, Policy, Window

    store = MemoryStore()
    config = e2e_config(
        policy=Policies(Policy(), {"51001": Policy(max_slippage=0), "51002": Policy(max_delay_ms=3000)}),
    )
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 4, config=config, store=store)
        copier = w.copier
        for i in (1, 2, 3):
            await w.add_slave(f"5100{i}", i)
        master = SimMasterEA(
            "9001",
            master_broker(w.market, random.Random(1)),
            w.listener.connect,
            lambda: w.clock.now_ms() - 5000,
            random.Random(2),
        )
        await nursery.start(master.run)
        await w.online("9001", "51001", "51002", "51003")
        core = copier.core
        await core.wait_for(lambda: all(core.accounts[a].quotes for a in ("51001", "51002", "51003")))
        trade_id = await master.open("XAUUSD", Side.SELL, 0.5)
        await master.wait_all_acked()
        await core.wait_for(lambda: core.in_flight == 0)
        receipts = {d.account_id: d for d in await store.decisions(trade_id)}
        assert receipts["51001"].reason == "slippage_too_high"
        assert receipts["51002"].reason == "max_delay_exceeded"
        assert json.loads(receipts["51002"].detail)["intent_age_ms"] >= 5000
        assert receipts["51003"].decision == "copy"

        always = Policy(windows=(Window("*", "00:00", "23:59", post_buffer_sec=60),))
        await core.set_rules(config.core, Policies(always), config.protocol, config.symbols)
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert all(s.broker.open_orders() == [] for s in w.slaves)
        assert any(isinstance(r, m.CloseResult) and r.success for r in w.slaves[2].results.values())
        nursery.cancel_scope.cancel()
