"""The copier and simulated terminals as separate processes (the CLI a user runs), over a real socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore
from tests.backends import free_port
from tests.e2e.world import CLI, read_until, sim_ea

pytestmark = pytest.mark.e2e


async def test_run_and_sim_terminals_as_processes(tmp_path: Path) -> None:
    config = tmp_path / "echo.toml"
    sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[log]\nformat = "json"\nfile = "{tmp_path / "echo.log"}"\n'
    )
    with trio.fail_after(60):
        copier = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "all", "--config", str(config)], stderr=subprocess.PIPE
        )
        slave = None
        try:
            await read_until(copier, b"copying")
            slave = await trio.lowlevel.open_process(
                sim_ea(sock, "slave", "51001", "--profile", "2"), stderr=subprocess.PIPE
            )
            await read_until(slave, b"connected")
            master = await trio.run_process(
                sim_ea(sock, "master", "9001", "--trades", "4", "--pace", "0.05"), capture_stderr=True
            )
            assert b"4 trades done" in master.stderr
            # SIGHUP: delivery, core rules and policies apply at once; [agent]/[store]/[log] need a restart
            changed = "[delivery]\nack_timeout_ms = 400\n[core]\nfixed_lot = 0.2\n"
            config.write_text(config.read_text().replace("echo.log", "other.log") + changed)
            copier.send_signal(signal.SIGHUP)
            said = await read_until(copier, b"reloaded")
            assert b"[log] changed; it takes effect after a restart" in said
            assert b"[core]" not in said and b"core, delivery, policy, protocol and symbols applied" in said
            config.write_text("[core]\nfixed_lot = -1\n")
            copier.send_signal(signal.SIGHUP)
            assert b"core.fixed_lot must be > 0" in await read_until(copier, b"reload refused")
        finally:
            for proc in (slave, copier):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
    assert copier.returncode == 0
    assert not sock.exists(), "the copier removes its socket when it stops"
    store = SqliteStore.open(db)
    try:
        trades = await store.trades()
        assert len(trades) == 4 and all(t.status == "closed" for t in trades)
        decisions = await store.decisions()
        assert [(d.account_id, d.decision) for d in decisions] == [("51001", "copy")] * 4
    finally:
        await store.aclose()


async def test_the_copier_serves_its_metrics_for_prometheus(tmp_path: Path) -> None:
    """`[metrics] listen`: the router's metrics (seed 001's names) and Core's event counts at /metrics."""
    sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
    port = free_port()
    config = tmp_path / "echo.toml"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
    )
    sim = [*CLI, "sim-ea", "--socket", str(sock), "--log-format", "json"]
    with trio.fail_after(60):
        copier = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "all", "--config", str(config)], stderr=subprocess.PIPE
        )
        slave = None
        try:
            await read_until(copier, b"copying")
            slave = await trio.lowlevel.open_process(
                [*sim, "--role", "slave", "--account", "51001", "--profile", "1"], stderr=subprocess.PIPE
            )
            await read_until(slave, b"connected")
            master = await trio.run_process(
                [*sim, "--role", "master", "--account", "9001", "--trades", "3", "--pace", "0.05"],
                capture_stderr=True,
            )
            assert b"3 trades done" in master.stderr
            await read_until(copier, b"core_trade_complete", 3)  # every slave fill and close is in
            url = f"http://127.0.0.1:{port}/metrics"
            text = await trio.to_thread.run_sync(
                lambda: urllib.request.urlopen(url, timeout=5).read().decode()
            )
        finally:
            for proc in (slave, copier):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
    for name in ("echo_core_router_dispatch_total", "echo_core_router_queue_depth"):
        assert f"{name}{{" in text, name
    assert "echo_core_router_dispatch_duration_ms_count{" in text
    copied = [
        line
        for line in text.splitlines()
        if line.startswith("echo_core_events_total{") and 'event="copied"' in line
    ]
    assert len(copied) == 1 and copied[0].endswith(" 3.0"), copied


def test_demo_with_a_policy_file_and_explain_as_processes(tmp_path: Path) -> None:
    """`demo --config FILE` copies under the file's policies and counts omissions by reason; `explain`
    shows the receipt of a trade of that demo, as JSON and as a table."""
    config = tmp_path / "policies.toml"
    config.write_text(
        '[policy."51001"]\nwindows = [{ symbol = "*", start_utc = "00:00", end_utc = "23:59" }]\n'
        '[policy."51002"]\nmax_spread = 0\n',
        encoding="utf-8",
    )
    demo = subprocess.run(
        [
            *CLI,
            *("demo", "--config", str(config), "--slaves", "3", "--trades", "6", "--pace", "0.01"),
            *("--workdir", str(tmp_path), "--seed", "4", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["omitted_reasons"], (summary, demo.stderr[-2000:])
    assert summary["omitted_reasons"]["no_trade_window"] == 6
    assert (
        summary["omitted_reasons"].get("spread_too_wide", 0)
        + summary["omitted_reasons"].get("quote_missing", 0)
        == 6
    )
    assert summary["copied"] == 6 and summary["lost"] == summary["duplicates"] == summary["open_after"] == 0

    store = f"sqlite:///{tmp_path / 'seed-4' / 'echo.db'}"
    shown = subprocess.run(
        [*CLI, "show", "--store", store], capture_output=True, text=True, timeout=60, check=True
    )
    trade_id = json.loads(shown.stdout)["trades"][0]["trade_id"]
    explained = subprocess.run(
        [*CLI, "explain", trade_id, "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    receipt = json.loads(explained.stdout)
    by_slave = {s["account_id"]: s for s in receipt["slaves"]}
    assert by_slave["51001"]["reason"] == "no_trade_window"
    assert by_slave["51002"]["reason"] in ("spread_too_wide", "quote_missing")
    copied = by_slave["51003"]
    assert copied["decision"] == "copy" and copied["execution"]["status"] == "ok"
    assert copied["latency_ms"]["master_to_slave_result"] >= 0
    table = subprocess.run(
        [*CLI, "explain", trade_id, "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "no_trade_window" in table.stdout and "copied 1, omitted 2" in table.stdout
    missing = subprocess.run(
        [*CLI, "explain", "01a211cf-4e14-7b8d-bcd4-96b5a82e8751", "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no trade" in missing.stderr

    # what a stricter configuration would make of account 51003's recorded handshake
    strict = tmp_path / "strict.toml"
    strict.write_text(
        '[protocol]\nmin_version = 2\n[symbols]\ncanonical = ["XAUUSD"]\nunknown_action = "reject"\n'
    )
    evaluated = subprocess.run(
        [
            *CLI,
            "handshake",
            "evaluate",
            "--account",
            "51003",
            "--store",
            store,
            "--config",
            str(strict),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(evaluated.stdout)
    verdicts = {e["canonical_symbol"]: e["status"] for e in out["evaluation"]["symbols"]}
    assert verdicts["XAUUSD"] == "ACCEPTED" and verdicts["GER30"] == "REJECTED"
    assert out["evaluation"]["status"] == "WARNING"
    assert out["recorded"][0]["status"] == "ACCEPTED", "the demo recorded the verdict it sent"


class Split:
    """``run --role core`` and ``run --role agent`` as processes on one TOML file, and the simulated
    terminals a test starts on the Agent's socket; ``stop`` ends every one (SIGCONT, then SIGTERM)."""

    def __init__(self, tmp_path: Path, extra_config: str = "") -> None:
        self.sock, self.db = tmp_path / "echo.sock", tmp_path / "echo.db"
        self.config = tmp_path / "echo.toml"
        self.config.write_text(
            f'[agent]\nsocket_path = "{self.sock}"\n[store]\nurl = "sqlite:///{self.db}"\n{extra_config}'
        )
        self.where = f"127.0.0.1:{free_port()}"
        self.sim = [*CLI, "sim-ea", "--socket", str(self.sock), "--log-format", "json"]
        self.procs: list[trio.Process] = []

    async def _open(self, argv: list[str], ready: bytes) -> trio.Process:
        proc = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
        self.procs.append(proc)
        await read_until(proc, ready)
        return proc

    async def start(self, slave_profile: str = "2") -> tuple[trio.Process, trio.Process, trio.Process]:
        """Core, then the Agent, then slave 51001 connected to it."""
        config = str(self.config)
        core = await self._open(
            [*CLI, "run", "--role", "core", "--config", config, "--listen", self.where],
            b"Agents connect to " + self.where.encode(),
        )
        agent = await self._open(
            [*CLI, "run", "--role", "agent", "--config", config, "--core", self.where],
            b"serving terminals",
        )
        slave = await self._open(
            [*self.sim, "--role", "slave", "--account", "51001", "--profile", slave_profile], b"connected"
        )
        return core, agent, slave

    async def master(self, *args: str) -> bytes:
        """Run master 9001 to the end; its log."""
        done = await trio.run_process(
            [*self.sim, "--role", "master", "--account", "9001", *args], capture_stderr=True
        )
        return bytes(done.stderr)

    async def stop(self) -> list[int | None]:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        return [p.returncode for p in self.procs]


async def test_split_core_and_agent_as_processes(tmp_path: Path) -> None:
    """`run --role core` and `run --role agent` as two processes over gRPC: a master's trades reach a
    slave through them, and the store of Core holds the trades and the decisions."""
    split = Split(tmp_path)
    with trio.fail_after(60):
        try:
            await split.start()
            assert b"3 trades done" in await split.master("--trades", "3", "--pace", "0.05")
        finally:
            codes = await split.stop()
    assert codes[:2] == [0, 0], "Core and the Agent stop cleanly on SIGTERM"
    store = SqliteStore.open(split.db)
    try:
        trades = await store.trades()
        assert len(trades) == 3 and all(t.status == "closed" for t in trades)
        decisions = await store.decisions()
        assert [(d.account_id, d.decision) for d in decisions] == [("51001", "copy")] * 3
    finally:
        await store.aclose()


def test_demo_split_copies_through_two_agent_processes(tmp_path: Path) -> None:
    """`demo --split`: Core serving gRPC, two `run --role agent` child processes, terminals on both."""
    demo = subprocess.run(
        [
            *(sys.executable, "-m", "echo", "demo", "--split", "--masters", "2", "--slaves", "3"),
            *("--trades", "8", "--pace", "0.02", "--workdir", str(tmp_path), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["split"] is True
    assert summary["expected_copies"] == summary["copied"] == 24
    assert summary["lost"] == summary["duplicates"] == summary["open_after"] == 0
    logs = [tmp_path / "seed-7" / f"agent-{n}.log" for n in (1, 2)]
    handshakes = [log.read_text().count('"agent_handshake"') for log in logs]
    assert sorted(handshakes) == [2, 3], "the five terminals are spread over both Agent processes"


async def test_split_core_notices_a_frozen_agent_by_keepalive_and_takes_it_back(tmp_path: Path) -> None:
    """An Agent process frozen with SIGSTOP keeps its socket open but answers no keepalive ping: Core
    drops its stream within about two heartbeats and marks its accounts offline. After SIGCONT the Agent
    reconnects by itself, its terminal is announced again, and trades are copied through it."""
    split = Split(tmp_path, "[delivery]\nheartbeat_interval_ms = 200\n")
    with trio.fail_after(60):
        try:
            core, agent, _slave = await split.start()
            await read_until(core, b"core_account_online")
            agent.send_signal(signal.SIGSTOP)
            with trio.fail_after(10):
                await read_until(core, b"core_account_offline")
            agent.send_signal(signal.SIGCONT)
            with trio.fail_after(20):
                await read_until(core, b"core_account_online")
            assert b"2 trades done" in await split.master("--trades", "2", "--pace", "0.05")
        finally:
            await split.stop()
    store = SqliteStore.open(split.db)
    try:
        decisions = await store.decisions()
        assert [(d.account_id, d.decision) for d in decisions] == [("51001", "copy")] * 2
        events = [e.kind for e in await store.events(limit=1000)]
        assert events.count("account_offline") >= 1
    finally:
        await store.aclose()


async def test_a_burst_beyond_cores_router_queues_is_turned_away_busy_and_retried_into_copies(
    tmp_path: Path,
) -> None:
    """Split mode as processes, Core's router at 2 workers x 4 places: a master opening 40 trades back to
    back gets ERR_BROKER_BUSY for some (recorded as router_busy), sends them again, and every trade is
    copied once and closed."""
    split = Split(
        tmp_path,
        "[router]\nworker_pool_size = 2\nqueue_depth_max = 4\nmax_behind_ms = 60000\n"
        "[delivery]\nretry_backoff_ms = 50\n",
    )
    logs: dict[str, bytearray] = {}
    complete = trio.Event()

    async def drain(name: str, proc: trio.Process) -> None:
        """Keep reading a process's log (a full pipe would stall it) and note when Core finished all 40."""
        assert proc.stderr is not None
        buf = logs.setdefault(name, bytearray())
        while chunk := await proc.stderr.receive_some():
            buf += chunk
            if name == "core" and buf.count(b"core_trade_complete") >= 40:
                complete.set()

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            try:
                started = await split.start(slave_profile="1")
                for name, proc in zip(("core", "agent", "slave"), started, strict=True):
                    nursery.start_soon(drain, name, proc)
                assert b"40 trades done" in await split.master("--burst", "40")
                with trio.move_on_after(30):
                    await complete.wait()  # Core logs each trade finished on every slave
                assert complete.is_set(), logs["core"].decode(errors="replace")[-3000:]
            finally:
                await split.stop()
    store = SqliteStore.open(split.db)
    try:
        busy = [e for e in await store.events(limit=100_000) if e.kind == "router_busy"]
        assert busy, "the burst fit in the router's queues; it proves nothing"
        assert all(json.loads(e.data)["queue_depth"] == 4 for e in busy)
        decisions = await store.decisions(limit=1000)
        assert len(decisions) == 40 and {(d.account_id, d.decision) for d in decisions} == {("51001", "copy")}
        trades = await store.trades(limit=1000)
        assert len(trades) == 40 and all(t.status == "closed" for t in trades)
    finally:
        await store.aclose()
