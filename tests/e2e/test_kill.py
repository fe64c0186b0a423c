"""SIGKILL the all-in-one copier process in the middle of traffic and start it again (and in split mode,
the Agent process or the Core process): no trade is lost or duplicated. Real processes, a real socket,
SQLite with every commit durable; the terminals keep their state in files, as the EAs do."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore
from tests.backends import free_port
from tests.e2e.world import read_until, sim_ea, start_run

pytestmark = pytest.mark.e2e


async def settled(db: Path) -> bool:
    store = SqliteStore.open(db)
    try:
        trades = await store.trades(limit=1000)
        tickets = [t for tr in trades for t in await store.tickets(tr.trade_id)]
        return (
            bool(trades)
            and not await store.journal("PENDING")
            and all(t.status == "closed" for t in trades)
            and all(t.status == "closed" for t in tickets)
        )
    finally:
        await store.aclose()


async def recorded(db: Path) -> int:
    store = SqliteStore.open(db)
    try:
        return len(await store.trades(limit=1000))
    finally:
        await store.aclose()


@pytest.mark.parametrize("killed", ["all", "agent", "core"])
async def test_sigkill_mid_traffic_loses_and_duplicates_nothing(tmp_path: Path, killed: str) -> None:
    """``all``: the all-in-one copier is killed; ``agent`` / ``core``: Core and the Agent run as two
    processes joined by gRPC and that one is killed and started again."""
    config = tmp_path / "echo.toml"
    sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
    where = f"127.0.0.1:{free_port()}"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[log]\nformat = "json"\nfile = "{tmp_path / "echo.log"}"\n'
        "[delivery]\nack_timeout_ms = 300\nretry_backoff_ms = 100\n"
        f'[split]\nlisten = "{where}"\ncore = "{where}"\ntoken = "k"\n'
    )
    slave_state = [tmp_path / f"slave-{i}.jsonl" for i in range(2)]
    with trio.fail_after(120):
        others: list[trio.Process] = []  # in split mode, the process that is not killed
        if killed == "all":
            copier = await start_run(config)
        elif killed == "agent":
            others.append(await start_run(config, "core"))
            copier = await start_run(config, "agent")
        else:
            copier = await start_run(config, "core")
            others.append(await start_run(config, "agent"))
        slaves = []
        for i, state in enumerate(slave_state):
            proc = await trio.lowlevel.open_process(
                sim_ea(sock, "slave", f"5100{i}", "--profile", str(i), "--state", str(state)),
                stderr=subprocess.PIPE,
            )
            await read_until(proc, b"connected")
            slaves.append(proc)
        master = await trio.lowlevel.open_process(
            sim_ea(
                sock,
                "master",
                "9001",
                "--trades",
                "12",
                "--pace",
                "0.15",
                "--state",
                str(tmp_path / "master.jsonl"),
            ),
            stderr=subprocess.PIPE,
        )
        try:
            await read_until(master, b"connected")
            # the fault lands in the middle of the script: once Core has recorded a few of its trades
            for _ in range(600):
                if await recorded(db) >= 3:
                    break
                await trio.sleep(0.1)
            assert await recorded(db) >= 3, "the master's trades did not reach the copier"
            copier.kill()  # SIGKILL: no cleanup, no flush, a socket file left behind
            await copier.wait()
            copier = await start_run(config, killed)
            assert await master.wait() == 0
            for _ in range(200):  # the other process's durable state is the only thing to watch
                if await settled(db):
                    break
                await trio.sleep(0.1)
            assert await settled(db), "the copier did not finish the master's trades"
        finally:
            for proc in (master, *slaves, copier, *others):
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
    store = SqliteStore.open(db)
    try:
        trades = await store.trades(limit=1000)
        assert len(trades) == 12
        trade_ids = {t.trade_id for t in trades}
    finally:
        await store.aclose()
    for state in slave_state:
        fills: Counter[str] = Counter()
        for line in state.read_text().splitlines():
            msg = json.loads(json.loads(line)["line"])
            if msg["type"] == "execution_result" and msg["payload"]["success"]:
                fills[msg["payload"]["trade_id"]] += 1
        assert set(fills) == trade_ids, f"{state.name}: missing {trade_ids - set(fills)}"
        assert max(fills.values()) == 1, f"{state.name}: duplicated {fills.most_common(2)}"
