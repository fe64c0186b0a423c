"""The copier and simulated terminals as separate processes (the CLI a user runs), over a real socket."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore

pytestmark = pytest.mark.e2e


async def read_until(proc: trio.Process, marker: bytes) -> bytes:
    """Read a process's stderr until ``marker`` appears (the process says it is ready)."""
    assert proc.stderr is not None
    seen = b""
    while marker not in seen:
        chunk = await proc.stderr.receive_some()
        assert chunk, f"process ended before saying {marker!r}: {seen.decode(errors='replace')}"
        seen += chunk
    return seen


async def test_run_and_sim_terminals_as_processes(tmp_path: Path) -> None:
    config = tmp_path / "echo.toml"
    sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[log]\nformat = "json"\nfile = "{tmp_path / "echo.log"}"\n'
    )
    cli = [sys.executable, "-m", "echo"]
    with trio.fail_after(60):
        copier = await trio.lowlevel.open_process(
            [*cli, "run", "--role", "all", "--config", str(config)], stderr=subprocess.PIPE
        )
        slave = None
        try:
            await read_until(copier, b"copying")
            slave = await trio.lowlevel.open_process(
                [
                    *cli,
                    "sim-ea",
                    "--role",
                    "slave",
                    "--account",
                    "51001",
                    "--socket",
                    str(sock),
                    "--profile",
                    "2",
                    "--log-format",
                    "json",
                ],
                stderr=subprocess.PIPE,
            )
            await read_until(slave, b"connected")
            master = await trio.run_process(
                [
                    *cli,
                    "sim-ea",
                    "--role",
                    "master",
                    "--account",
                    "9001",
                    "--socket",
                    str(sock),
                    "--trades",
                    "4",
                    "--pace",
                    "0.05",
                    "--log-format",
                    "json",
                ],
                capture_stderr=True,
            )
            assert b"4 trades done" in master.stderr
            # SIGHUP: delivery settings apply at once; other sections are reported as needing a restart
            changed = "[delivery]\nack_timeout_ms = 400\n[core]\nfixed_lot = 0.2\n"
            config.write_text(config.read_text() + changed)
            copier.send_signal(signal.SIGHUP)
            said = await read_until(copier, b"reloaded")
            assert b"[core] changed; it takes effect after a restart" in said
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
