"""EchoSlave.mq4, compiled through the harness, as a process against the real Agent and Core on a Unix
socket; the master is the Python simulated terminal. Opens, a modification, a partial close and a close
are copied onto the compiled slave; a repeated command_id is answered from its memory, not executed."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import trio
from structlog.testing import capture_logs

from echo.adapters.pipe.unix import connect_unix
from echo.app.root import Copier, run_all_in_one
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, CoreConfig, StoreConfig
from echo.domain.types import Side
from echo.pipe.codec import encode
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker
from tests.mql4.harness_support import MQL4, build

pytestmark = pytest.mark.e2e

SLAVE = "51777"
BROKER = """account 51777 USD 10000 100
tickets 70000000
symbol XAUUSD.m 2 0.01 0.01 0.01 100 0.01 30 100 1.0 {bid:.2f} {ask:.2f}
symbol GER30.x 1 0.1 0.1 0.1 50 0.1 20 1 0.1 18497.8 18499.8
symbol EURUSDpro 5 0.00001 0.00001 0.01 50 0.01 10 100000 1.0 1.08500 1.08512
"""


@pytest.fixture(scope="module")
def slave_exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build(MQL4 / "EchoSlave.mq4", tmp_path_factory.mktemp("slave"))


def positions(copier: Copier) -> list[m.Position]:
    snap = copier.core.accounts[SLAVE].snapshot
    return [] if snap is None else snap.positions


async def test_compiled_slave_copies_and_answers_repeats_from_memory(slave_exe: Path, tmp_path: Path) -> None:
    sock, files = tmp_path / "echo.sock", tmp_path / "files"
    files.mkdir()
    market = SimMarket(random.Random(1))
    master_side = master_broker(market, random.Random(2))
    bid, ask = master_side.quote("XAUUSD")  # the slave's broker quotes gold where the master's does
    (tmp_path / "broker.txt").write_text(BROKER.format(bid=bid - 0.1, ask=ask + 0.1), encoding="utf-8")
    config = Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=AgentConfig(agent_id="agent-mql4", socket_path=str(sock)),
        store=StoreConfig(url="memory://"),
    )
    env = {
        **os.environ,
        "ECHO_SOCKET": str(sock),
        "ECHO_BROKER": str(tmp_path / "broker.txt"),
        "ECHO_FILES": str(files),
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
                first = msgspec.json.decode(
                    next(r.payload for r in rows if r.kind == "execute"), type=m.ExecuteOrder
                )
                with capture_logs() as logs:
                    copier.agent.connections[SLAVE].outbox.send_nowait(encode(first, 0))
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
