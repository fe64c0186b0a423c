"""The copier on Windows serving its terminals on a real named pipe (``\\\\.\\pipe\\NAME``, trio's IOCP with
overlapped I/O): the Windows build of Python under Wine runs ``run --role all``, and simulated terminals
(``sim-ea --pipe``, the same Wine Python) copy a master's trades onto two slaves exactly once. Ctrl-C stops
the copier cleanly. (Wine 8 ignores FILE_FLAG_FIRST_PIPE_INSTANCE, so the refusal of a second copier on the
same pipe name cannot be shown here.)"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore
from tests.backends import free_port
from tests.e2e.test_kill import settled
from tests.windows.wine import WinePython, read_until, windows_path, wine_python

pytestmark = pytest.mark.e2e


async def stop(proc: trio.Process, seen: bytearray) -> int:
    """Ctrl-C (SIGINT to Wine becomes a console Ctrl-C), then its exit status."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(20):
            assert proc.stderr is not None
            async for chunk in proc.stderr:
                seen += chunk
        with trio.move_on_after(10):
            return await proc.wait()
        proc.kill()
    return await proc.wait()


async def test_a_master_copies_onto_two_slaves_over_a_named_pipe(tmp_path: Path) -> None:
    py: WinePython = wine_python()
    name = f"echo-test-{secrets.token_hex(4)}"
    db = tmp_path / "echo.db"
    config = tmp_path / "echo.toml"
    config.write_text(f"[agent]\npipe_name = {name!r}\n[store]\nurl = 'sqlite:///{windows_path(db)}'\n")
    said = {k: bytearray() for k in ("copier", "s1", "s2", "master")}
    procs: dict[str, trio.Process] = {}
    sim = ["-m", "echo", "sim-ea", "--pipe", name]
    with trio.fail_after(150):
        try:
            procs["copier"] = await py.start("-m", "echo", "run", "--config", windows_path(config))
            await read_until(procs["copier"], b"Ctrl-C or Ctrl-Break stops.", said["copier"])
            assert f"terminals connect to \\\\.\\pipe\\{name};".encode() in said["copier"]
            for key, account, profile in (("s1", "51001", "0"), ("s2", "51002", "1")):
                procs[key] = await py.start(
                    *sim, "--role", "slave", "--account", account, "--profile", profile
                )
            await read_until(procs["s1"], b"connected to the named pipe", said["s1"])
            await read_until(procs["s2"], b"connected to the named pipe", said["s2"])
            master = await py.start(
                *sim, "--role", "master", "--account", "9001", "--trades", "4", "--pace", "0.05"
            )
            procs["master"] = master
            await read_until(master, b"sim master 9001: 4 trades done", said["master"])
            assert await master.wait() == 0
        finally:
            for key in ("s1", "s2", "copier"):
                if key in procs:
                    await stop(procs[key], said[key])
    assert procs["copier"].returncode == 0, said["copier"].decode(errors="replace")
    assert b"echo-copier: SIGINT, stopping" in said["copier"]
    for key, text in said.items():
        assert b"Traceback" not in text, f"{key}: {text.decode(errors='replace')}"
    store = SqliteStore.open(db, create=False)
    try:
        trades = await store.trades()
        assert len(trades) == 4 and all(t.status == "closed" for t in trades)
        decisions = await store.decisions()
        assert Counter((d.account_id, d.decision) for d in decisions) == {
            ("51001", "copy"): 4,
            ("51002", "copy"): 4,
        }
        for trade in trades:
            tickets = await store.tickets(trade.trade_id)
            opened = Counter(t.account_id for t in tickets if t.parent_ticket is None)
            assert opened == {"51001": 1, "51002": 1}, tickets  # each slave opened it exactly once
            assert all(t.status == "closed" for t in tickets)
            assert all(c.status == "ok" for c in await store.commands(trade.trade_id))
    finally:
        await store.aclose()


async def test_the_copier_killed_mid_traffic_and_started_again_loses_nothing(tmp_path: Path) -> None:
    """The copier process is killed (no clean stop) while a master trades; started again on the same store,
    the terminals reconnect on their own and every trade ends copied onto both slaves exactly once."""
    py: WinePython = wine_python()
    name = f"echo-test-{secrets.token_hex(4)}"
    db = tmp_path / "echo.db"
    config = tmp_path / "echo.toml"
    config.write_text(f"[agent]\npipe_name = {name!r}\n[store]\nurl = 'sqlite:///{windows_path(db)}'\n")
    said = {k: bytearray() for k in ("copier", "again", "s1", "s2", "master")}
    procs: dict[str, trio.Process] = {}
    sim = ["-m", "echo", "sim-ea", "--pipe", name]
    run = ["-m", "echo", "run", "--config", windows_path(config)]
    with trio.fail_after(200):
        try:
            procs["copier"] = await py.start(*run)
            await read_until(procs["copier"], b"Ctrl-C or Ctrl-Break stops.", said["copier"])
            for key, account, profile in (("s1", "51001", "0"), ("s2", "51002", "1")):
                state = windows_path(tmp_path / f"{account}.jsonl")
                procs[key] = await py.start(
                    *sim, "--role", "slave", "--account", account, "--profile", profile, "--state", state
                )
            await read_until(procs["s1"], b"connected to the named pipe", said["s1"])
            await read_until(procs["s2"], b"connected to the named pipe", said["s2"])
            queue = windows_path(tmp_path / "9001.jsonl")
            master = await py.start(
                *sim,
                "--role",
                "master",
                "--account",
                "9001",
                "--trades",
                "8",
                "--pace",
                "0.3",
                "--state",
                queue,
            )
            procs["master"] = master
            await read_until(procs["copier"], b"core_trade_complete", said["copier"])
            procs["copier"].kill()  # mid-traffic: the master has more trades to make
            await procs["copier"].wait()
            procs["again"] = await py.start(*run)
            await read_until(procs["again"], b"Ctrl-C or Ctrl-Break stops.", said["again"])
            await read_until(master, b"sim master 9001: 8 trades done", said["master"])
            assert await master.wait() == 0
            # the master is flat; the slaves' closes may still be on their way: watch the store
            for _ in range(300):
                if await settled(db):
                    break
                await trio.sleep(0.1)
        finally:
            for key in ("s1", "s2", "again", "copier"):
                if key in procs:
                    await stop(procs[key], said[key])
    assert procs["again"].returncode == 0, said["again"].decode(errors="replace")
    assert b"core_trade_complete" in said["again"], "no trade was left to copy after the restart"
    for key, text in said.items():
        assert b"Traceback" not in text, f"{key}: {text.decode(errors='replace')}"
    store = SqliteStore.open(db, create=False)
    try:
        trades = await store.trades()
        assert len(trades) == 8 and all(t.status == "closed" for t in trades)
        for trade in trades:
            tickets = await store.tickets(trade.trade_id)
            opened = Counter(t.account_id for t in tickets if t.parent_ticket is None)
            assert opened == {"51001": 1, "51002": 1}, tickets  # each slave opened it exactly once
            assert all(t.status == "closed" for t in tickets)
    finally:
        await store.aclose()


def test_only_this_user_system_and_administrators_may_open_the_pipe() -> None:
    """The pipe's DACL, read back from its handle: protected (nothing inherited), full access for SYSTEM,
    Administrators and the copier's user, and no entry for anyone else (no Everyone, no Anonymous).
    (That remote clients are rejected, PIPE_REJECT_REMOTE_CLIENTS, needs a second machine: not shown.)"""
    py = wine_python()
    probe = Path(__file__).with_name("pipe_security_probe.py")
    done = py.run(windows_path(probe), f"echo-test-{secrets.token_hex(4)}")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["user"].startswith("S-1-5-")
    assert got["dacl"] == f"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{got['user']})"


def test_agent_pipe_users_are_granted_read_and_write_and_an_unknown_account_is_named() -> None:
    """``agent.pipe_users`` (what the service sets to the user who installed it, since it runs as SYSTEM):
    each account, by name or SID, gets read and write on the pipe, nothing more; an account Windows does not
    know stops the listener with one line naming it."""
    py = wine_python()
    probe = windows_path(Path(__file__).with_name("pipe_security_probe.py"))
    users = py.run(probe, f"echo-test-{secrets.token_hex(4)}", "Users, S-1-5-32-545 ")
    assert users.returncode == 0, users.stderr
    got = json.loads(users.stdout.strip().splitlines()[-1])
    base = f"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{got['user']})"
    assert got["dacl"] == base + "(A;;GWGR;;;BU)" * 2  # BUILTIN\Users, once by name and once by SID
    for account, said in [
        ("no-such-account-xyz", "agent.pipe_users: no Windows account named 'no-such-account-xyz'"),
        ("S-1-bogus", "agent.pipe_users: 'S-1-bogus' is not a valid SID"),
    ]:
        done = py.run(probe, f"echo-test-{secrets.token_hex(4)}", account)
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"error": said}


async def test_a_windows_agent_serves_the_pipe_for_a_linux_core_over_grpc(tmp_path: Path) -> None:
    """Split mode across systems: Core runs natively on Linux (``run --role core``); the Agent runs as on
    Windows (``run --role agent`` under Wine), serving the named pipe and streaming to Core over gRPC."""
    py: WinePython = wine_python()
    name = f"echo-test-{secrets.token_hex(4)}"
    port = free_port()
    db = tmp_path / "core.db"
    core_toml, agent_toml = tmp_path / "core.toml", tmp_path / "agent.toml"
    core_toml.write_text(f"[store]\nurl = 'sqlite:///{db}'\n[split]\nlisten = '127.0.0.1:{port}'\n")
    agent_toml.write_text(
        f"[agent]\npipe_name = {name!r}\nledger_url = 'memory://'\n[split]\ncore = '127.0.0.1:{port}'\n"
    )
    said = {k: bytearray() for k in ("core", "agent", "s1", "s2", "master")}
    procs: dict[str, trio.Process] = {}
    sim = ["-m", "echo", "sim-ea", "--pipe", name]
    with trio.fail_after(150):
        try:
            procs["core"] = await trio.lowlevel.open_process(
                [sys.executable, "-m", "echo", "run", "--role", "core", "--config", str(core_toml)],
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            await read_until(procs["core"], b"Agents connect to", said["core"])
            procs["agent"] = await py.start(
                "-m", "echo", "run", "--role", "agent", "--config", windows_path(agent_toml)
            )
            await read_until(
                procs["agent"], f"serving terminals at \\\\.\\pipe\\{name};".encode(), said["agent"]
            )
            for key, account, profile in (("s1", "51001", "0"), ("s2", "51002", "1")):
                procs[key] = await py.start(
                    *sim, "--role", "slave", "--account", account, "--profile", profile
                )
            await read_until(procs["s1"], b"connected to the named pipe", said["s1"])
            await read_until(procs["s2"], b"connected to the named pipe", said["s2"])
            master = await py.start(
                *sim, "--role", "master", "--account", "9001", "--trades", "4", "--pace", "0.05"
            )
            procs["master"] = master
            await read_until(master, b"sim master 9001: 4 trades done", said["master"])
            assert await master.wait() == 0
        finally:
            for key in ("s1", "s2", "agent", "core"):
                if key in procs:
                    await stop(procs[key], said[key])
    assert procs["agent"].returncode == 0, said["agent"].decode(errors="replace")
    assert procs["core"].returncode == 0, said["core"].decode(errors="replace")
    for key, text in said.items():
        assert b"Traceback" not in text, f"{key}: {text.decode(errors='replace')}"
    store = SqliteStore.open(db, create=False)
    try:
        trades = await store.trades()
        assert len(trades) == 4 and all(t.status == "closed" for t in trades)
        for trade in trades:
            tickets = await store.tickets(trade.trade_id)
            opened = Counter(t.account_id for t in tickets if t.parent_ticket is None)
            assert opened == {"51001": 1, "51002": 1}, tickets
    finally:
        await store.aclose()


async def test_bad_lines_on_the_pipe_get_the_same_errors_as_on_the_socket(tmp_path: Path) -> None:
    """The line protocol and its limits are the Agent's, whatever carries the bytes: a line that is not
    JSON and a line over ``agent.max_line_bytes`` each get their error reply on the pipe."""
    py: WinePython = wine_python()
    name = f"echo-test-{secrets.token_hex(4)}"
    config = tmp_path / "echo.toml"
    config.write_text(f"[agent]\npipe_name = {name!r}\nmax_line_bytes = 4096\n[store]\nurl = 'memory://'\n")
    seen = bytearray()
    with trio.fail_after(90):
        copier = await py.start("-m", "echo", "run", "--config", windows_path(config))
        try:
            await read_until(copier, b"Ctrl-C or Ctrl-Break stops.", seen)
            probe = Path(__file__).with_name("pipe_client_probe.py")
            done = await trio.to_thread.run_sync(lambda: py.run(windows_path(probe), name, "4096"))
        finally:
            assert await stop(copier, seen) == 0, seen.decode(errors="replace")
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert (first["type"], first["payload"]["code"]) == ("error", "ERR_PROTOCOL_MALFORMED_JSON"), first
    assert (second["type"], second["payload"]["code"]) == ("error", "ERR_PROTOCOL_LINE_TOO_LONG"), second
