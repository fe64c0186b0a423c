"""A burst far past capacity through the copier as a process: the copier (``run --role all``) is its own
process over a real Unix socket, bounded small on purpose (``router.max_in_flight`` and the terminals'
outboxes), and simulated terminals drive it from this process. Not timed: it checks that every open and
every close arrives afterwards exactly once on each slave and in the store, and that no terminal was cut
off."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from echo.adapters.pipe.unix import connect_unix
from echo.adapters.store.sqlite import SqliteStore
from echo.domain import messages as m
from echo.domain.types import Side
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.e2e.world import CLI, fills, read_until

pytestmark = pytest.mark.e2e

MASTERS, SLAVES, OPENS = 3, 4, 24
"""Each master opens OPENS positions at once (a grid strategy's burst): 288 slave orders, then as many
closes, against a Core that admits 40 unanswered commands and terminals that queue 16 lines."""


def closes(slave: SimSlaveEA) -> Counter[str]:
    """Successful closes per trade_id on a slave terminal."""
    return Counter(r.trade_id for r in slave.results.values() if isinstance(r, m.CloseResult) and r.success)


def log_events(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        counts[str(record.get("event"))] += 1
        if record.get("event") == "core.router.enqueue" and record.get("reason"):
            counts[f"busy_{record['reason']}"] += 1
    return counts


async def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``predicate`` (another process does the work) until it holds or ``timeout_s`` passes."""
    with trio.move_on_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (the work is the copier process's)
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def test_a_burst_far_past_capacity_arrives_exactly_once_and_no_terminal_is_cut_off(
    tmp_path: Path,
) -> None:
    sock, db, logfile = tmp_path / "echo.sock", tmp_path / "echo.db", tmp_path / "echo.log"
    config = tmp_path / "echo.toml"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\noutbox_lines = 16\n'
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "NORMAL"\n'
        "[router]\nmax_in_flight = 40\n"
        "[delivery]\nretry_backoff_ms = 100\n"
        f'[log]\nformat = "json"\nlevel = "info"\nfile = "{logfile}"\n'
    )
    market, slaves, masters = terminals(sock, "5300", "930")
    with trio.fail_after(120):
        copier = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "all", "--config", str(config)], stderr=subprocess.PIPE
        )
        try:
            await read_until(copier, b"copying")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, copier)
                opened = await burst_then_close(nursery, market, slaves, masters)
                nursery.cancel_scope.cancel()
        finally:
            copier.terminate()
            await copier.wait()

    events = log_events(logfile)
    turned_away = events["busy_in_flight"] + events["busy_behind"]
    assert turned_away > 0, "the burst was admitted whole; it proves nothing"
    assert events["agent_ea_too_slow"] == events["agent_ea_stalled"] == 0
    await each_once(db, slaves, masters, opened)


def terminals(
    sock: Path, slave_prefix: str, master_prefix: str
) -> tuple[SimMarket, list[SimSlaveEA], list[SimMasterEA]]:
    """SLAVES simulated slaves and MASTERS masters on the Agent's socket ``sock`` (not running yet)."""
    market = SimMarket(random.Random(1))
    rng = random.Random(2)

    async def connect() -> trio.abc.Stream:
        return await connect_unix(str(sock))

    slaves = [
        SimSlaveEA(
            f"{slave_prefix}{i}", slave_broker(i, market, random.Random(rng.random())), connect, _now_ms
        )
        for i in range(SLAVES)
    ]
    masters = [
        SimMasterEA(
            f"{master_prefix}{i}", master_broker(market, random.Random(rng.random())), connect, _now_ms, rng
        )
        for i in range(MASTERS)
    ]
    return market, slaves, masters


async def burst_then_close(
    nursery: trio.Nursery, market: SimMarket, slaves: list[SimSlaveEA], masters: list[SimMasterEA]
) -> list[str]:
    """Run the terminals in ``nursery``; once every handshake is evaluated, each master opens OPENS trades at
    once, then (every open on every slave) closes them all at once; returns once every copy is closed, with
    the trades opened."""
    opened: list[str] = []
    nursery.start_soon(market.run)
    for terminal in [*slaves, *masters]:
        await nursery.start(terminal.run)
    await _until(lambda: all(t.feedback_ms for t in [*slaves, *masters]), "every handshake evaluated")

    async def burst(master: SimMasterEA) -> None:
        for n in range(OPENS):
            opened.append(await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.01))

    async with trio.open_nursery() as openers:
        for ms in masters:
            openers.start_soon(burst, ms)
    for ms in masters:
        await ms.wait_all_acked()  # every intent admitted at last (RETRY / BUSY until then)
    await _until(lambda: all(len(fills(s)) == len(opened) for s in slaves), "every open on every slave")
    for ms in masters:  # then every master closes everything at once
        for trade_id in list(ms.trades):
            nursery.start_soon(ms.close, trade_id)
    await _until(lambda: all(ms.pending == 0 for ms in masters), "every close acknowledged")
    await _until(lambda: all(not s.broker.open_orders() for s in slaves), "every copy closed")
    return opened


async def each_once(
    db: Path, slaves: list[SimSlaveEA], masters: list[SimMasterEA], opened: list[str]
) -> None:
    """Every open and close exactly once on every slave and in the store at ``db``; no terminal
    reconnected."""
    assert len(opened) == MASTERS * OPENS
    for s in slaves:
        assert fills(s) == Counter({t: 1 for t in opened}), s.account_id
        assert closes(s) == Counter({t: 1 for t in opened}), s.account_id
    assert all(t.connections == 1 for t in [*slaves, *masters]), "a terminal was disconnected"
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
