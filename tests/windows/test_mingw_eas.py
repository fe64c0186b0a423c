"""The EAs as a Windows terminal runs them: EchoMaster and EchoSlave cross-compiled with MinGW (their pipe
calls are the real kernel32 ones, their socket calls the real Winsock), under Wine.

- Over a real named pipe: the copier as on Windows (the Windows build of Python under Wine, ``run --role
  all``) serves ``\\\\.\\pipe\\NAME``; a compiled master copies an open, a modification, a partial close and a
  close onto two compiled slaves (other symbol suffixes and lot steps); a slave killed as a copy reaches it
  and started again gets each command once; the copier killed mid-traffic and started again loses
  nothing. The copier, the master and the slaves are set up once for the three (a Wine process start costs
  about a second).
- Over TCP to a native Linux copier (``agent.tcp_listen``): MT4 under Wine on a Linux VPS.

Exactly once is read from the slaves' brokers (their orders on disk) and from the copier's store."""

from __future__ import annotations

import functools
import re
import secrets
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore
from echo.app.root import Copier, run_all_in_one
from echo.domain.config import AgentConfig, Config, CoreConfig, StoreConfig
from tests.backends import free_port
from tests.mql4.harness_support import Terminal
from tests.mql4.test_compiled_eas import BROKER, MASTER_BROKER, SLAVE_B_BROKER
from tests.windows.conftest import WindowsEAs
from tests.windows.wine import WinePython, read_until, windows_path, wine_python

pytestmark = pytest.mark.e2e

GOLD = {"gold_bid": 2398.40, "gold_ask": 2398.60}
QUICK = {"ReconnectMs": "200"}  # the EAs find a restarted copier sooner


def wine_terminal(py: WinePython, exe: Path, home: Path, broker: str, **inputs: str) -> Terminal:
    """A MinGW-built EA under Wine, in the prepared Wine prefix (where the Windows copier's pipe lives)."""
    return Terminal(["wine", str(exe)], home, broker, py.env, free_port(), {**QUICK, **inputs}, windows_path)


async def until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Wait for ``check()`` (another process's state, read from its files), or fail naming ``what``."""
    with trio.move_on_after(seconds):
        while not check():  # noqa: ASYNC110 (another process's files: nothing to wait on but time)
            await trio.sleep(0.05)
        return
    raise AssertionError(f"{what}: not within {seconds} s")


async def drain(proc: trio.Process, said: bytearray) -> None:
    """Keep reading a process's log so that it never blocks on a full pipe."""
    assert proc.stderr is not None
    async for chunk in proc.stderr:
        said += chunk


async def interrupt(proc: trio.Process) -> int:
    """Ctrl-C (SIGINT to Wine becomes a console Ctrl-C) and the exit status; its log is being drained."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    with trio.fail_after(30):
        return await proc.wait()


def online(said: bytearray, account: str) -> bool:
    """Whether the copier's log says ``account`` came online."""
    return re.search(rb"core_account_online[^\n]*account_id\W+" + account.encode() + rb"\b", said) is not None


async def test_mingw_eas_copy_through_the_windows_copier_over_a_named_pipe(
    windows_eas: WindowsEAs, tmp_path: Path
) -> None:
    py = wine_python()
    name = f"echo-test-{secrets.token_hex(4)}"
    db = tmp_path / "echo.db"
    config = tmp_path / "echo.toml"
    config.write_text(
        f"[core]\nfixed_lot = 0.5\n[agent]\npipe_name = {name!r}\n"
        f"[store]\nurl = 'sqlite:///{windows_path(db)}'\n"
    )
    run = ["-m", "echo", "run", "--role", "all", "--config", windows_path(config)]
    pipe = {"PipeName": name}
    master = wine_terminal(
        py, windows_eas.master, tmp_path / "master", MASTER_BROKER.format(**GOLD),
        SymbolMappings="XAUUSD:XAUUSD.r", **pipe,
    )  # fmt: skip
    slave_a = wine_terminal(
        py, windows_eas.slave, tmp_path / "slave-a", BROKER.format(bid=2398.3, ask=2398.7), **pipe
    )
    slave_b = wine_terminal(
        py, windows_eas.slave, tmp_path / "slave-b", SLAVE_B_BROKER.format(**GOLD), **pipe
    )
    slaves = (slave_a, slave_b)
    said: list[bytearray] = []

    async def start_copier(nursery: trio.Nursery) -> trio.Process:
        said.append(bytearray())
        proc = await py.start(*run)
        await read_until(proc, b"Ctrl-C or Ctrl-Break stops.", said[-1])
        nursery.start_soon(drain, proc, said[-1])
        return proc

    async def everyone_online() -> None:
        for account in ("9101", "51777", "51888"):
            await until(functools.partial(online, said[-1], account), f"{account} online")

    def stops(t: Terminal) -> set[float]:
        return {o.stop_loss for o in t.orders() if o.pool == "open"}

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            copier = await start_copier(nursery)
            try:
                for t in (*slaves, master):
                    await t.start()
                await everyone_online()

                # an open, a modification, a partial close and a close, onto both slaves
                first = int((await master.order("open XAUUSD.r BUY 1.0 0 0")).split()[1])
                await until(lambda: all(s.open_lots() == [0.5] for s in slaves), "the open copied")
                await master.order(f"modify {first} 2380.00 2420.00")
                await until(lambda: all(stops(s) == {2380.0} for s in slaves), "the modification copied")
                rest = int((await master.order(f"close {first} 0.4")).split()[1])  # 40%: 0.2 of each 0.5
                await until(lambda: all(s.open_lots() == [0.3] for s in slaves), "the partial close copied")
                assert all(stops(s) == {2380.0} for s in slaves)
                await master.order(f"close {rest} 0.6")
                await until(lambda: all(s.open_lots() == [] for s in slaves), "the close copied")

                # a slave killed as the copies arrive (its open executed or not, its result sent or not);
                # what the master does meanwhile reaches it once it is back; each command takes effect once
                second = int((await master.order("open XAUUSD.r SELL 0.5 0 0")).split()[1])
                await until(lambda: slave_b.open_lots() == [0.5], "the open copied to the slave still up")
                await slave_a.kill()
                await master.order(f"modify {second} 2420.00 2380.00")
                await until(
                    lambda: stops(slave_b) == {2420.0}, "the modification copied to the slave still up"
                )
                await slave_a.start()
                await until(lambda: slave_a.open_lots() == [0.5], "the open copied to the restarted slave")
                await until(
                    lambda: stops(slave_a) == {2420.0}, "the modification copied to the restarted slave"
                )

                # the copier killed mid-traffic (an open just placed), a close made while it is down
                third = int((await master.order("open XAUUSD.r BUY 0.5 0 0")).split()[1])
                copier.kill()
                await copier.wait()
                await master.order(f"close {second} 0.5")
                copier = await start_copier(nursery)
                await everyone_online()  # they reconnect by themselves
                await until(
                    lambda: all(len(s.opened()) == 3 and s.open_lots() == [0.5] for s in slaves),
                    "the third open and the second close copied",
                )
                assert all(stops(s) == {0.0} for s in slaves)
                await master.order(f"close {third} 0.5")
                await until(lambda: all(s.open_lots() == [] for s in slaves), "the last close copied")
            finally:
                for t in (master, *slaves):
                    await t.stop()
                assert await interrupt(copier) == 0, said[-1].decode(errors="replace")
            nursery.cancel_scope.cancel()
    for text in said:
        assert b"Traceback" not in text, text.decode(errors="replace")
    for s in slaves:  # the slaves' brokers: three trades, each opened once
        assert sorted(s.opened().values()) == [1, 1, 1], s.orders()
    store = SqliteStore.open(db, create=False)
    try:
        trades = await store.trades()
        assert len(trades) == 3 and all(t.status == "closed" for t in trades)
        for trade in trades:
            tickets = await store.tickets(trade.trade_id)
            opened = Counter(t.account_id for t in tickets if t.parent_ticket is None)
            assert opened == {"51777": 1, "51888": 1}, tickets
            assert all(t.status == "closed" for t in tickets)
        symbols = {t.account_id: t.symbol for t in await store.tickets(trades[0].trade_id)}
        assert symbols == {"51777": "XAUUSD.m", "51888": "XAUUSD+"}
    finally:
        await store.aclose()


async def test_mingw_eas_under_wine_reach_a_native_linux_copier_over_tcp(
    windows_eas: WindowsEAs, tmp_path: Path
) -> None:
    """MT4 under Wine on a Linux VPS: Wine's Winsock is the host's sockets, so the EAs (Transport=tcp) reach
    the native copier's ``agent.tcp_listen`` on 127.0.0.1."""
    py = wine_python()
    listen = f"127.0.0.1:{free_port()}"
    config = Config(
        core=CoreConfig(fixed_lot=0.5),
        agent=AgentConfig(agent_id="agent-wine", socket_path=str(tmp_path / "echo.sock"), tcp_listen=listen),
        store=StoreConfig(url="memory://"),
    )
    tcp = {"Transport": "tcp", "TcpPort": listen.rpartition(":")[2]}
    master = wine_terminal(
        py, windows_eas.master, tmp_path / "master", MASTER_BROKER.format(**GOLD),
        SymbolMappings="XAUUSD:XAUUSD.r", **tcp,
    )  # fmt: skip
    slave = wine_terminal(py, windows_eas.slave, tmp_path / "slave", SLAVE_B_BROKER.format(**GOLD), **tcp)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, config)
            core = copier.core
            try:
                for t in (slave, master):
                    await t.start()
                await core.wait_for(
                    lambda: all(a in core.accounts and core.accounts[a].online for a in ("9101", "51888"))
                )
                ticket = int((await master.order("open XAUUSD.r BUY 1.0 0 0")).split()[1])
                await core.wait_for(lambda: core.stats.get("copied") == 1 and core.in_flight == 0)
                await until(lambda: slave.open_lots() == [0.5], "the open copied")
                await master.order(f"close {ticket} 1.0")
                await core.wait_for(lambda: not core.trades and core.in_flight == 0)
                await until(lambda: slave.open_lots() == [], "the close copied")
                (trade,) = await copier.store.trades(limit=10)
                assert trade.status == "closed"
                assert {t.account_id: t.symbol for t in await copier.store.tickets(trade.trade_id)} == {
                    "51888": "XAUUSD+"
                }
            finally:
                for t in (master, slave):
                    await t.stop()
            nursery.cancel_scope.cancel()
    assert list(slave.opened().values()) == [1]
