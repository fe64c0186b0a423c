"""A burst far past capacity through split mode: Core (``run --role core``) and one Agent (``run --role
agent``) are processes of their own joined by gRPC, bounded small on purpose (``router.max_in_flight``,
``router.max_behind_ms`` and the terminals' outboxes), and simulated terminals drive the Agent from this
process over its Unix socket. Not timed: it checks that every open and every close arrives afterwards
exactly once on each slave and in the store, that no terminal was cut off and that the gRPC link never
dropped (what Core queued for the Agent and the answers it had not read yet were waited for, not
re-sent into a collapse)."""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import trio

from echo.adapters.pipe.unix import connect_unix
from echo.adapters.store.sqlite import SqliteStore
from echo.domain.types import Side
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port
from tests.e2e.test_overload import _until, closes, log_events
from tests.e2e.world import CLI, fills, read_until

pytestmark = pytest.mark.e2e

MASTERS, SLAVES, OPENS = 3, 4, 24
"""Each master opens OPENS positions at once (a grid strategy's burst): 288 slave orders, then as many
closes, against a Core that admits 40 unanswered commands and 50 ms of backlog. The terminals queue 16
lines: Core answers a master's 24 intents in one write to the Agent, more than the outbox holds, and the
answers that find it full wait in the connection instead of the master being cut off."""


async def test_a_burst_far_past_capacity_in_split_mode_arrives_exactly_once_over_one_grpc_link(
    tmp_path: Path,
) -> None:
    sock, db = tmp_path / "agent.sock", tmp_path / "echo.db"
    core_log, agent_log = tmp_path / "core.log", tmp_path / "agent.log"
    where = f"127.0.0.1:{free_port()}"
    core_conf, agent_conf = tmp_path / "core.toml", tmp_path / "agent.toml"
    core_conf.write_text(
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "NORMAL"\n'
        f'[split]\nlisten = "{where}"\n'
        "[router]\nmax_in_flight = 40\nmax_behind_ms = 50\n"
        "[delivery]\nretry_backoff_ms = 100\n"
        f'[log]\nformat = "json"\nlevel = "info"\nfile = "{core_log}"\n'
    )
    agent_conf.write_text(
        f'[agent]\nagent_id = "burst-agent"\nsocket_path = "{sock}"\noutbox_lines = 16\n'
        f'ledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
        f'[split]\ncore = "{where}"\n'
        f'[log]\nformat = "json"\nlevel = "info"\nfile = "{agent_log}"\n'
    )
    market = SimMarket(random.Random(1))
    rng = random.Random(2)

    async def connect() -> trio.abc.Stream:
        return await connect_unix(str(sock))

    slaves = [
        SimSlaveEA(f"5400{i}", slave_broker(i, market, random.Random(rng.random())), connect, _now_ms)
        for i in range(SLAVES)
    ]
    masters = [
        SimMasterEA(f"940{i}", master_broker(market, random.Random(rng.random())), connect, _now_ms, rng)
        for i in range(MASTERS)
    ]
    opened: list[str] = []
    processes: list[trio.Process] = []
    with trio.fail_after(120):
        try:
            core = await trio.lowlevel.open_process(
                [*CLI, "run", "--role", "core", "--config", str(core_conf)], stderr=subprocess.PIPE
            )
            processes.append(core)
            await read_until(core, b"copying")
            agent = await trio.lowlevel.open_process(
                [*CLI, "run", "--role", "agent", "--config", str(agent_conf)], stderr=subprocess.PIPE
            )
            processes.append(agent)
            await read_until(agent, b"serving terminals")
            async with trio.open_nursery() as nursery:
                for proc in processes:
                    nursery.start_soon(_drain, proc)
                nursery.start_soon(market.run)
                for terminal in [*slaves, *masters]:
                    await nursery.start(terminal.run)
                await _until(
                    lambda: all(t.feedback_ms for t in [*slaves, *masters]), "every handshake evaluated"
                )

                async def burst(master: SimMasterEA) -> None:
                    for n in range(OPENS):
                        opened.append(await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.01))

                async with trio.open_nursery() as openers:
                    for ms in masters:
                        openers.start_soon(burst, ms)
                for ms in masters:
                    await ms.wait_all_acked()  # every intent admitted at last (RETRY / BUSY until then)
                await _until(
                    lambda: all(len(fills(s)) == len(opened) for s in slaves), "every open on every slave"
                )
                for ms in masters:  # then every master closes everything at once
                    for trade_id in list(ms.trades):
                        nursery.start_soon(ms.close, trade_id)
                await _until(lambda: all(ms.pending == 0 for ms in masters), "every close acknowledged")
                await _until(lambda: all(not s.broker.open_orders() for s in slaves), "every copy closed")
                # read before the processes stop (stopping ends the link, which is logged)
                core_events, agent_events = log_events(core_log), log_events(agent_log)
                nursery.cancel_scope.cancel()
        finally:
            for proc in reversed(processes):
                proc.terminate()
                await proc.wait()

    assert len(opened) == MASTERS * OPENS
    for s in slaves:
        assert fills(s) == Counter({t: 1 for t in opened}), s.account_id
        assert closes(s) == Counter({t: 1 for t in opened}), s.account_id
    assert all(t.connections == 1 for t in [*slaves, *masters]), "a terminal was disconnected"
    turned_away = sum(n for event, n in core_events.items() if event.startswith("busy_"))
    assert turned_away > 0, "the burst was admitted whole; it proves nothing"
    assert agent_events["agent_ea_too_slow"] == agent_events["agent_ea_stalled"] == 0
    assert core_events["grpc_agent_connected"] == 1
    assert core_events["grpc_agent_disconnected"] == agent_events["grpc_link_down"] == 0
    store = SqliteStore.open(db)
    try:
        trades = await store.trades(limit=10_000)
        assert sorted(t.trade_id for t in trades) == sorted(opened)
        assert all(t.status == "closed" for t in trades)
        decisions = Counter(
            (d.trade_id, d.account_id, d.decision) for d in await store.decisions(limit=10_000)
        )
        assert decisions == Counter({(t, s.account_id, "copy"): 1 for t in opened for s in slaves})
    finally:
        await store.aclose()


async def _drain(proc: trio.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.receive_some():
        pass


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
