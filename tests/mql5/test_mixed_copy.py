"""An MT4 master (EchoMaster.mq4, compiled) copying through the real Agent and Core to an MT4 slave
(EchoSlave.mq4) and an MT5 slave (EchoSlave.mq5), all compiled through the harness, over the Agent's TCP
port. The two slaves' brokers differ in symbol suffix, lot step, StopLevel and filling mode. Opens, SL/TP
modifications, partial closes (a new ticket on MT4, the same ticket on MT5) and closes are copied; a repeated
command is answered from memory and, after the MT5 terminal was killed mid-traffic, from its results file;
an SL hit on the MT5 slave is reported and never reopened. Each trade is opened exactly once on each slave.
A netting MT5 account is refused at its handshake while the copier keeps serving the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from echo.app.root import Copier, run_all_in_one
from echo.domain import messages as m
from echo.domain.config import Config, CoreConfig, StoreConfig
from echo.pipe.codec import encode
from echo.services.core.service import command_of
from tests.backends import free_port
from tests.mql4.conftest import Wire
from tests.mql4.harness_support import Terminal
from tests.mql4.test_compiled_eas import BROKER, MASTER_BROKER, terminal

pytestmark = pytest.mark.e2e

MT4, MT5, MASTER = "51777", "52555", "9101"
MT5_BROKER = """account {account} USD 20000 100
tickets 60000000
company Hedge Markets Ltd
symbol XAUUSD.pro 2 0.01 0.01 0.1 50 0.1 50 100 1.0 2398.30 2398.70
filling XAUUSD.pro 2
symbol EURUSD.pro 5 0.00001 0.00001 0.1 50 0.1 10 100000 1.0 1.08500 1.08512
margin_mode {mode}
"""
"""An MT5 account: gold as XAUUSD.pro with lots in steps of 0.1 from 0.1, a StopLevel of 50 points, and
IOC as the only filling the symbol allows (an order sent with FOK is refused TRADE_RETCODE_INVALID_FILL)."""
GOLD = {"gold_bid": 2398.40, "gold_ask": 2398.60}


def tcp_wire(tmp_path: Path) -> Wire:
    return Wire("tcp", tmp_path / "echo.sock", f"127.0.0.1:{free_port()}")


def config(wire: Wire) -> Config:
    return Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=wire.agent(agent_id="agent-mt5"),
        store=StoreConfig(url="memory://"),
    )


def lots(copier: Copier, account: str) -> list[float]:
    snap = copier.core.accounts[account].snapshot
    return sorted(p.lots for p in snap.positions) if snap else []


def positions(copier: Copier, account: str) -> list[m.Position]:
    snap = copier.core.accounts[account].snapshot
    return list(snap.positions) if snap else []


async def resend_first_execute(copier: Copier, account: str, trade_id: str) -> None:
    """The account's first execute_order of the trade, written into its terminal again, byte for byte: the
    result is a duplicate at Core (the EA answered from what it stored), and nothing else happens."""
    rows = await copier.store.commands(trade_id)
    first = command_of(next(r for r in rows if r.kind == "execute" and r.account_id == account))
    with capture_logs() as logs:
        copier.agent.connections[account].outbox.send_nowait((encode(first, 0), ""))
        await copier.core.wait_for(lambda: any(e["event"] == "core_result_duplicate" for e in logs))


def opened_once(t: Terminal, trades: int) -> None:
    counts = t.opened()
    assert len(counts) == trades and set(counts.values()) == {1}, counts


async def test_an_mt4_master_copies_to_an_mt4_and_an_mt5_slave_exactly_once(
    master_exe: Path, slave_exe: Path, slave5_exe: Path, tmp_path: Path
) -> None:
    wire = tcp_wire(tmp_path)
    master = terminal(
        master_exe, tmp_path / "master", wire, MASTER_BROKER.format(**GOLD), SymbolMappings="XAUUSD:XAUUSD.r"
    )
    quick = {"SnapshotMs": "300"}
    mt4 = terminal(slave_exe, tmp_path / "mt4", wire, BROKER.format(bid=2398.3, ask=2398.7), **quick)
    mt5 = terminal(
        slave5_exe, tmp_path / "mt5", wire, MT5_BROKER.format(account=MT5, mode="hedging"), **quick
    )
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config(wire))
            core = copier.core
            try:
                for t in (mt4, mt5, master):
                    await t.start()
                await core.wait_for(
                    lambda: all(a in core.accounts and core.accounts[a].online for a in (MASTER, MT4, MT5))
                )
                assert sorted(core.accounts[MT5].symbols) == ["EURUSD", "XAUUSD"]

                first = int((await master.order("open XAUUSD.r BUY 1.0 2380.00 2420.00")).split()[1])
                await core.wait_for(lambda: core.stats.get("copied") == 2 and core.in_flight == 0)
                await core.wait_for(lambda: lots(copier, MT4) == [0.5] and lots(copier, MT5) == [0.5])
                (opened5,) = positions(copier, MT5)
                (first_copy4,) = [p.ticket for p in positions(copier, MT4)]
                assert (opened5.symbol, opened5.stop_loss, opened5.take_profit) == (
                    "XAUUSD.pro",
                    2380.0,
                    2420.0,
                )
                (trade,) = await copier.store.trades(limit=10)

                await master.order(f"modify {first} 2385.00 2425.00")
                await core.wait_for(lambda: core.stats.get("modify_sent") == 2 and core.in_flight == 0)
                await core.wait_for(
                    lambda: {p.stop_loss for a in (MT4, MT5) for p in positions(copier, a)} == {2385.0}
                )

                rest = int(
                    (await master.order(f"close {first} 0.4")).split()[1]
                )  # 40%: 0.2 of each slave's 0.5
                await core.wait_for(lambda: lots(copier, MT4) == [0.3] and lots(copier, MT5) == [0.3])
                (kept,) = positions(copier, MT5)
                assert kept.ticket == opened5.ticket, "an MT5 partial close keeps the position's ticket"
                (moved,) = positions(copier, MT4)
                assert moved.comment.startswith("from #"), "MT4 gives the rest a new ticket"

                await resend_first_execute(copier, MT5, trade.trade_id)
                assert lots(copier, MT5) == [0.3]

                # the MT5 terminal dies mid-traffic (no OnDeinit); a second trade is opened meanwhile
                await mt5.kill()
                await core.wait_for(lambda: not core.accounts[MT5].online)
                second = int((await master.order("open XAUUSD.r SELL 0.5 0 0")).split()[1])
                await core.wait_for(lambda: core.stats.get("copied") == 3 and lots(copier, MT4) == [0.3, 0.5])
                await mt5.start()
                await core.wait_for(lambda: core.stats.get("copied") == 4 and core.in_flight == 0)
                await core.wait_for(lambda: lots(copier, MT5) == [0.3, 0.5])
                # the restarted EA lost its memory: the repeat is answered from its results file
                await resend_first_execute(copier, MT5, trade.trade_id)
                assert lots(copier, MT5) == [0.3, 0.5]

                # the first trade's rest reaches its stop loss on the MT5 broker: reported, never reopened
                await mt5.order("quote XAUUSD.pro 2384.00 2384.20")
                await core.wait_for(lambda: core.stats.get("slave_sl") == 1)
                closes_before = core.stats.get("close_sent", 0)
                await master.order(f"close {rest} 0.6")
                await core.wait_for(lambda: lots(copier, MT4) == [0.5] and core.in_flight == 0)
                assert core.stats.get("close_sent", 0) == closes_before + 1, "only the MT4 slave had a rest"

                await master.order(f"close {second} 0.5")
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                await core.wait_for(lambda: lots(copier, MT4) == [] and lots(copier, MT5) == [])
                assert core.stats["copied"] == 4, "never reopened"
                rows = await copier.store.tickets(trade.trade_id)
                assert {(t.account_id, t.symbol) for t in rows} == {(MT4, "XAUUSD.m"), (MT5, "XAUUSD.pro")}
                # the store follows each broker's tickets: MT4's rest is a ticket of its own, MT5's the same
                assert sorted((t.ticket, t.parent_ticket, t.status) for t in rows if t.account_id == MT4) == [
                    (first_copy4, None, "closed"),
                    (moved.ticket, first_copy4, "closed"),
                ]
                assert [(t.ticket, t.lots, t.status) for t in rows if t.account_id == MT5] == [
                    (opened5.ticket, 0.3, "closed")
                ]
            finally:
                for t in (master, mt4, mt5):
                    await t.stop()
            nursery.cancel_scope.cancel()
    opened_once(mt4, 2)
    opened_once(mt5, 2)


async def test_a_netting_mt5_account_is_refused_at_its_handshake_and_the_others_are_served(
    master_exe: Path, slave_exe: Path, slave5_exe: Path, tmp_path: Path
) -> None:
    wire = tcp_wire(tmp_path)
    netting = "52666"
    master = terminal(
        master_exe, tmp_path / "master", wire, MASTER_BROKER.format(**GOLD), SymbolMappings="XAUUSD:XAUUSD.r"
    )
    mt4 = terminal(slave_exe, tmp_path / "mt4", wire, BROKER.format(bid=2398.3, ask=2398.7))
    mt5 = terminal(slave5_exe, tmp_path / "mt5", wire, MT5_BROKER.format(account=netting, mode="netting"))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config(wire))
            core = copier.core
            try:
                for t in (mt4, mt5, master):
                    await t.start()
                await core.wait_for(
                    lambda: all(
                        a in core.accounts and core.accounts[a].online for a in (MASTER, MT4, netting)
                    )
                )
                rejected = m.RegistrationStatus.REJECTED
                await core.wait_for(  # the verdict applied, and its evaluation row written
                    lambda: core.accounts[netting].registration is rejected and core.recorded
                )
                (row,) = await copier.store.evaluations(netting)
                (issue,) = json.loads(row.global_errors)
                assert issue["code"] == "POSITION_MODE_NETTING" and "netting account" in issue["message"]
                assert core.accounts[MT4].registration is m.RegistrationStatus.ACCEPTED

                ticket = int((await master.order("open XAUUSD.r BUY 1.0 0 0")).split()[1])
                await core.wait_for(lambda: core.stats.get("copied") == 1 and core.in_flight == 0)
                await core.wait_for(lambda: lots(copier, MT4) == [0.5])
                await master.order(f"close {ticket} 1.0")
                await core.wait_for(
                    lambda: not core.trades and core.in_flight == 0 and lots(copier, MT4) == []
                )
                assert core.accounts[netting].online, "refused, but still connected and told why"
            finally:
                for t in (master, mt4, mt5):
                    await t.stop()
            nursery.cancel_scope.cancel()
    assert mt5.orders() == [], "nothing was sent to the netting account"
