"""EchoSlave.mq4, compiled through the harness, as a process against the real Agent and Core, over the
Agent's named pipe (its Unix socket here) and over TCP (``agent.tcp_listen``, the EAs' ws2_32 calls); the
master is the Python simulated terminal. Opens, a modification, a partial close and a close
are copied onto the compiled slave; a repeated command_id is answered from its memory, not executed."""

from __future__ import annotations

import functools
import os
import random
import time
from pathlib import Path

import msgspec
import pytest
import trio
from structlog.testing import capture_logs

from echo.adapters.pipe.unix import connect_unix
from echo.adapters.store.memory import MemoryStore
from echo.app.root import Copier, run_all_in_one
from echo.domain import messages as m
from echo.domain.config import Config, CoreConfig, StoreConfig
from echo.domain.types import Role, Side
from echo.pipe.codec import encode
from echo.services.core.service import command_of
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker
from tests.mql4.conftest import Wire
from tests.mql4.harness_support import Terminal

pytestmark = pytest.mark.e2e

SLAVE = "51777"
BROKER = """account 51777 USD 10000 100
tickets 70000000
symbol XAUUSD.m 2 0.01 0.01 0.01 100 0.01 30 100 1.0 {bid:.2f} {ask:.2f}
symbol GER30.x 1 0.1 0.1 0.1 50 0.1 20 1 0.1 18497.8 18499.8
symbol EURUSDpro 5 0.00001 0.00001 0.01 50 0.01 10 100000 1.0 1.08500 1.08512
"""


def positions(copier: Copier) -> list[m.Position]:
    snap = copier.core.accounts[SLAVE].snapshot
    return [] if snap is None else snap.positions


async def test_compiled_slave_copies_and_answers_repeats_from_memory(
    slave_exe: Path, tmp_path: Path, wire: Wire
) -> None:
    sock, files = wire.sock, tmp_path / "files"
    files.mkdir()
    market = SimMarket(random.Random(1))
    master_side = master_broker(market, random.Random(2))
    bid, ask = master_side.quote("XAUUSD")  # the slave's broker quotes gold where the master's does
    (tmp_path / "broker.txt").write_text(BROKER.format(bid=bid - 0.1, ask=ask + 0.1), encoding="utf-8")
    config = Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=wire.agent(agent_id="agent-mql4"),
        store=StoreConfig(url="memory://"),
    )
    env = {
        **os.environ,
        "ECHO_SOCKET": str(wire.ea_socket),
        "ECHO_BROKER": str(tmp_path / "broker.txt"),
        "ECHO_FILES": str(files),
        **{f"ECHO_INPUT_{k}": v for k, v in wire.inputs.items()},
    }
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config)
            core = copier.core
            slave = await trio.lowlevel.open_process([str(slave_exe)], env=env)
            try:
                market = SimMarket(random.Random(1))
                master = SimMasterEA(
                    "9001",
                    master_broker(market, random.Random(2)),
                    lambda: connect_unix(sock),
                    _now,
                    random.Random(3),
                )
                await nursery.start(master.run)
                await core.wait_for(lambda: SLAVE in core.accounts and core.accounts[SLAVE].online)
                assert sorted(core.accounts[SLAVE].symbols) == ["EURUSD", "GER30", "XAUUSD"]
                # the EA made its terminal id once, kept it in its files folder and presented it
                terminal_id = (files / "echo_terminal_id.txt").read_text(encoding="ascii").strip()
                assert len(terminal_id) == 32 and int(terminal_id, 16) >= 0
                assert copier.agent.connections[SLAVE].terminal_id == terminal_id
                # another connection claiming the compiled slave's account is refused; it keeps it
                intruder = await connect_unix(sock)
                await intruder.send_all(
                    encode(m.Handshake(SLAVE, Role.SLAVE, 2, terminal_id="e" * 32), _now())
                )
                reply = b""
                while chunk := await intruder.receive_some():
                    reply += chunk
                assert b"ERR_PROTOCOL_ACCOUNT_IN_USE" in reply and b"delivery_config" not in reply
                await intruder.aclose()
                assert copier.agent.connections[SLAVE].terminal_id == terminal_id

                trade = await master.open("XAUUSD", Side.BUY, 1.0)
                await master.wait_all_acked()
                await core.wait_for(lambda: core.stats.get("copied") == 1 and core.in_flight == 0)
                await core.wait_for(
                    lambda: len(positions(copier)) == 1
                )  # its state snapshot follows the result
                (pos,) = positions(copier)
                assert (pos.symbol, pos.lots, pos.side) == ("XAUUSD.m", 0.5, Side.BUY)

                bid, ask = master.broker.quote("XAUUSD")
                await master.modify(trade, round(bid - 12.0, 2), round(ask + 15.0, 2))
                await master.partial_close(trade, 0.4)  # 40%: 0.2 of the slave's 0.5
                await master.wait_all_acked()
                await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("slave_closes") == 1)
                await core.wait_for(lambda: len(positions(copier)) == 1 and positions(copier)[0].lots == 0.3)
                (rest,) = positions(copier)
                assert rest.ticket != pos.ticket and rest.stop_loss is not None

                # the first command again, byte for byte: answered from memory, nothing executed
                rows = await copier.store.commands(trade)
                first = command_of(next(r for r in rows if r.kind == "execute"))
                with capture_logs() as logs:
                    copier.agent.connections[SLAVE].outbox.send_nowait((encode(first, 0), ""))
                    await core.wait_for(lambda: any(e["event"] == "core_result_duplicate" for e in logs))
                assert len(positions(copier)) == 1

                await master.close(trade)
                await master.wait_all_acked()
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                await core.wait_for(lambda: positions(copier) == [])
                sent = {r.command_id for r in await copier.store.commands(trade)}
            finally:
                slave.terminate()
                await slave.wait()
            nursery.cancel_scope.cancel()
    # the slave's memory: one stored result per command it executed, each command_id once
    results = (files / "echo_slave_results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(results) == len(sent) and len(sent) >= 4


def _now() -> int:
    return time.time_ns() // 1_000_000


MASTER_BROKER = """account 9101 USD 100000 100
tickets 90000000
symbol XAUUSD.r 2 0.01 0.01 0.01 100 0.01 0 100 1.0 {gold_bid:.2f} {gold_ask:.2f}
symbol DE30.cash 1 0.1 0.1 0.1 50 0.1 0 1 0.1 18497.9 18499.1
"""
SLAVE_B_BROKER = """account 51888 EUR 5000 30
tickets 80000000
symbol XAUUSD+ 3 0.001 0.001 0.1 20 0.1 250 100 1.0 {gold_bid:.3f} {gold_ask:.3f}
symbol #GER30_cash 1 0.1 0.1 0.1 50 0.1 25 25 0.25 18497.6 18499.6
"""


def terminal(exe: Path, home: Path, wire: Wire, broker: str, **inputs: str) -> Terminal:
    """A compiled EA process on this machine, reaching the Agent by ``wire``."""
    env = {**os.environ, "ECHO_SOCKET": str(wire.ea_socket)}
    return Terminal([str(exe)], home, broker, env, home / "control.sock", {**wire.inputs, **inputs})


async def test_compiled_master_and_two_compiled_slaves_copy_through_the_agent(
    master_exe: Path, slave_exe: Path, tmp_path: Path, wire: Wire
) -> None:
    gold = {"gold_bid": 2398.40, "gold_ask": 2398.60}
    config = Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=wire.agent(agent_id="agent-mql4", token="mql4-token"),
        store=StoreConfig(url="memory://"),
    )
    master = terminal(
        master_exe, tmp_path / "master", wire, MASTER_BROKER.format(**gold),
        SymbolMappings="XAUUSD:XAUUSD.r,GER30:DE30.cash", AgentToken="mql4-token",
    )  # fmt: skip
    slave_a = terminal(
        slave_exe, tmp_path / "slave-a", wire, BROKER.format(bid=2398.3, ask=2398.7), AgentToken="mql4-token"
    )
    slave_b = terminal(
        slave_exe, tmp_path / "slave-b", wire, SLAVE_B_BROKER.format(**gold), AgentToken="mql4-token"
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config)
            core = copier.core
            try:
                for t in (slave_a, slave_b, master):
                    await t.start()
                everyone = ("9101", "51777", "51888")
                await core.wait_for(
                    lambda: all(a in core.accounts and core.accounts[a].online for a in everyone)
                )

                def lots(account: str) -> list[float]:
                    snap = core.accounts[account].snapshot
                    return sorted(p.lots for p in snap.positions) if snap else []

                ticket = int((await master.order("open XAUUSD.r BUY 1.0 0 0")).split()[1])
                await core.wait_for(lambda: core.stats.get("copied") == 2 and core.in_flight == 0)
                await core.wait_for(lambda: lots("51777") == [0.5] and lots("51888") == [0.5])

                await master.order(f"modify {ticket} 2380.00 2420.00")
                await core.wait_for(lambda: core.stats.get("modify_sent") == 2 and core.in_flight == 0)
                rest = int((await master.order(f"close {ticket} 0.4")).split()[1])  # 40% of the trade
                await core.wait_for(lambda: lots("51777") == [0.3] and lots("51888") == [0.3])
                sl = {p.stop_loss for a in ("51777", "51888") for p in core.accounts[a].snapshot.positions}  # type: ignore[union-attr]
                assert sl == {2380.0}

                await master.order(f"close {rest} 0.6")
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                await core.wait_for(lambda: lots("51777") == [] and lots("51888") == [])
                (trade,) = await copier.store.trades(limit=10)
                assert (trade.master_symbol, trade.symbol, trade.status) == ("XAUUSD.r", "XAUUSD", "closed")
                symbols = {t.account_id: t.symbol for t in await copier.store.tickets(trade.trade_id)}
                assert symbols == {"51777": "XAUUSD.m", "51888": "XAUUSD+"}
            finally:
                for t in (master, slave_a, slave_b):
                    await t.stop()
            nursery.cancel_scope.cancel()


async def test_compiled_master_follows_many_orders_closed_out_of_order(
    master_exe: Path, slave_exe: Path, tmp_path: Path, wire: Wire
) -> None:
    """A master holding a dozen orders (its scan looks each followed trade up from the last one found):
    a modification in the middle, a partial close, several closes at once out of order, then the rest;
    every open, modification and close reaches the slave once."""
    gold = {"gold_bid": 2398.40, "gold_ask": 2398.60}
    config = Config(
        core=CoreConfig(fixed_lot=0.1),
        agent=wire.agent(agent_id="agent-mql4-many"),
        store=StoreConfig(url="memory://"),
    )
    master = terminal(
        master_exe, tmp_path / "master", wire, MASTER_BROKER.format(**gold), SymbolMappings="XAUUSD:XAUUSD.r"
    )
    slave = terminal(slave_exe, tmp_path / "slave", wire, BROKER.format(bid=2398.3, ask=2398.7))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config)
            core = copier.core
            try:
                for t in (slave, master):
                    await t.start()
                await core.wait_for(
                    lambda: all(a in core.accounts and core.accounts[a].online for a in ("9101", SLAVE))
                )

                def lots() -> list[float]:
                    snap = core.accounts[SLAVE].snapshot
                    return sorted(round(p.lots, 2) for p in snap.positions) if snap else []

                tickets = [
                    int((await master.order("open XAUUSD.r BUY 1.0 0 0")).split()[1]) for _ in range(12)
                ]
                await core.wait_for(lambda: core.stats.get("copied") == 12 and core.in_flight == 0)
                await core.wait_for(lambda: lots() == [0.1] * 12)
                await master.order(f"modify {tickets[4]} 2380.00 2420.00")
                await core.wait_for(lambda: core.stats.get("modify_sent") == 1 and core.in_flight == 0)
                await master.order(f"close {tickets[7]} 0.5")
                await core.wait_for(lambda: lots() == [0.05] + [0.1] * 11)
                for i in (9, 1, 2, 11):  # several closes before the master's next scan, out of order
                    await master.order(f"close {tickets[i]} 1.0")
                await core.wait_for(lambda: lots() == [0.05] + [0.1] * 7)
                sl = {p.ticket: p.stop_loss for p in core.accounts[SLAVE].snapshot.positions}  # type: ignore[union-attr]
                assert list(sl.values()).count(2380.0) == 1
                for order in master.orders():
                    if order.pool == "open":
                        await master.order(f"close {order.ticket} {order.lots}")
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                await core.wait_for(lambda: lots() == [])
                trades = await copier.store.trades(limit=100)
                assert len(trades) == 12 and {t.status for t in trades} == {"closed"}
                # one order per trade on the slave (a partial close's remainder aside), nothing opened twice
                assert sum(1 for o in slave.orders() if not o.comment.startswith("from #")) == 12
                assert core.stats.get("copied") == 12
            finally:
                for t in (master, slave):
                    await t.stop()
            nursery.cancel_scope.cancel()


async def test_compiled_eas_survive_an_agent_restart_and_a_master_restart_with_unacked_intents(
    master_exe: Path, slave_exe: Path, tmp_path: Path, wire: Wire
) -> None:
    """The Agent (with Core) restarts while the master changes a trade; later the master's terminal
    restarts while an intent is still unacknowledged in its queue file. Everything arrives, once."""
    store = MemoryStore()  # the copier's disk: it outlives the copier process
    config = Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=wire.agent(agent_id="agent-mql4"),
        store=StoreConfig(url="memory://"),
    )
    gold = {"gold_bid": 2398.40, "gold_ask": 2398.60}
    master = terminal(
        master_exe, tmp_path / "master", wire, MASTER_BROKER.format(**gold), SymbolMappings="XAUUSD:XAUUSD.r"
    )
    slave = terminal(slave_exe, tmp_path / "slave", wire, BROKER.format(bid=2398.3, ask=2398.7))
    copiers: list[Copier] = []

    async def copier_process(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                copiers.append(await n.start(functools.partial(run_all_in_one, config, store=store)))
                task_status.started(scope)
        stopped.set()

    async def stop_copier(process: trio.CancelScope) -> None:
        """The copier process goes down, and is gone (its socket lock let go) before another starts."""
        nonlocal stopped
        process.cancel()
        await stopped.wait()
        stopped = trio.Event()

    stopped = trio.Event()

    def lots() -> list[float]:
        snap = copiers[-1].core.accounts[SLAVE].snapshot
        return sorted(p.lots for p in snap.positions) if snap else []

    async def everyone_online() -> None:
        core = copiers[-1].core
        await core.wait_for(
            lambda: all(a in core.accounts and core.accounts[a].online for a in ("9101", SLAVE))
        )

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            process: trio.CancelScope = await nursery.start(copier_process)
            try:
                await slave.start()
                await master.start()
                await everyone_online()
                first = int((await master.order("open XAUUSD.r BUY 1.0 0 0")).split()[1])
                await copiers[-1].core.wait_for(lambda: lots() == [0.5])

                await stop_copier(process)  # the Agent and Core go down; the master's SL/TP change must wait
                await master.order(f"modify {first} 2380.00 2420.00")
                process = await nursery.start(copier_process)
                await everyone_online()  # both EAs reconnect by themselves
                core = copiers[-1].core
                await core.wait_for(lambda: core.stats.get("modify_sent") == 1 and core.in_flight == 0)
                await core.wait_for(lambda: lots() == [0.5] and _stops(copiers[-1]) == {2380.0})

                await stop_copier(
                    process
                )  # down again; a new trade's intent stays in the master's queue file
                second = int((await master.order("open XAUUSD.r SELL 0.5 0 0")).split()[1])
                await master.order(
                    "sync"
                )  # the EA's next timer tick has seen the order and queued its intent
                identity = tmp_path / "master" / "files" / "echo_terminal_id.txt"
                terminal_id = identity.read_text(encoding="ascii")
                await master.stop()
                assert (
                    "trade_intent"
                    in (tmp_path / "master" / "files" / "echo_master_intents.jsonl").read_text()
                )
                await master.start()
                process = await nursery.start(copier_process)
                await everyone_online()
                core = copiers[-1].core
                await core.wait_for(lambda: lots() == [0.5, 0.5] and core.in_flight == 0)
                assert identity.read_text(encoding="ascii") == terminal_id  # made once, kept
                assert copiers[-1].agent.connections["9101"].terminal_id == terminal_id.strip()

                await master.order(f"close {first} 1.0")
                await master.order(f"close {second} 0.5")
                await core.wait_for(lambda: not core.trades and core.in_flight == 0 and lots() == [])
                trades = await store.trades(limit=10)
                assert len(trades) == 2 and {t.status for t in trades} == {"closed"}
                tickets = [t for tr in trades for t in await store.tickets(tr.trade_id)]
                assert len(tickets) == 2, "one slave position per master trade: nothing duplicated"
            finally:
                for t in (master, slave):
                    await t.stop()
            nursery.cancel_scope.cancel()


def _stops(copier: Copier) -> set[float | None]:
    snap = copier.core.accounts[SLAVE].snapshot
    return {p.stop_loss for p in snap.positions} if snap else set()


async def test_compiled_slaves_report_broker_closes_and_are_never_reopened(
    master_exe: Path, slave_exe: Path, tmp_path: Path, wire: Wire
) -> None:
    """One compiled slave is stopped out, the other's stop-loss is hit by the price. Each reports it in its
    state snapshot (recent_closes); Core records it with the reason, never reopens, and the master's close
    later sends those slaves nothing."""
    gold = {"gold_bid": 2398.40, "gold_ask": 2398.60}
    config = Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=wire.agent(agent_id="agent-mql4"),
        store=StoreConfig(url="memory://"),
    )
    master = terminal(
        master_exe, tmp_path / "master", wire, MASTER_BROKER.format(**gold), SymbolMappings="XAUUSD:XAUUSD.r"
    )
    quick = {"SnapshotMs": "300"}  # the state snapshot that reports a broker's close comes sooner
    stopped = terminal(slave_exe, tmp_path / "slave-a", wire, BROKER.format(bid=2398.3, ask=2398.7), **quick)
    hit = terminal(slave_exe, tmp_path / "slave-b", wire, SLAVE_B_BROKER.format(**gold), **quick)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config)
            core = copier.core
            try:
                for t in (stopped, hit, master):
                    await t.start()
                everyone = ("9101", "51777", "51888")
                await core.wait_for(
                    lambda: all(a in core.accounts and core.accounts[a].online for a in everyone)
                )
                ticket = int((await master.order("open XAUUSD.r BUY 1.0 2380.00 2420.00")).split()[1])
                await core.wait_for(lambda: core.stats.get("copied") == 2 and core.in_flight == 0)
                closes_before = core.stats.get("close_sent", 0)

                await stopped.order("stopout")
                await hit.order("quote XAUUSD+ 2379.000 2379.200")  # through the SL the copy carries
                await core.wait_for(
                    lambda: core.stats.get("slave_stop_out") == 1 and core.stats.get("slave_sl") == 1
                )
                (trade,) = await copier.store.trades(limit=10)
                events = {
                    (e.account_id, msgspec.json.decode(e.data)["reason"])
                    for e in await copier.store.events(trade.trade_id)
                    if e.kind == "slave_closed_by_broker"
                }
                assert events == {("51777", "STOP_OUT"), ("51888", "SL")}

                await master.order(f"close {ticket} 1.0")
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                assert core.stats.get("close_sent", 0) == closes_before, (
                    "nothing left to close on those slaves"
                )
                assert core.stats["copied"] == 2, "never reopened"
            finally:
                for t in (master, stopped, hit):
                    await t.stop()
            nursery.cancel_scope.cancel()
