"""One copier per socket and per store: a second ``run`` on the same socket, SQLite file or PostgreSQL
schema stops at start with one line naming the first, and the first keeps copying on its intact socket."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio

from echo.adapters.store.postgres import PostgresStore
from echo.adapters.store.sqlite import SqliteStore
from echo.ports.store import Store
from tests.backends import postgres_schema
from tests.e2e.world import CLI, read_until

pytestmark = pytest.mark.e2e


def write_config(path: Path, sock: Path, store_url: str, log: Path) -> Path:
    path.write_text(
        f'[agent]\nsocket_path = "{sock}"\nledger_url = "sqlite:///{log.with_suffix(".ledger.db")}"\n'
        f'[store]\nurl = "{store_url}"\n'
        f'[log]\nformat = "json"\nfile = "{log}"\n'
    )
    return path


def refusal(second: subprocess.CompletedProcess[str]) -> str:
    """The second copier's complaint: a non-zero exit and one line (its log goes to its log file)."""
    assert second.returncode != 0, second.stderr
    assert "Traceback" not in second.stderr, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    return lines[0]


async def copy_trades(sock: Path, n: int) -> None:
    """A slave and a master terminal against ``sock``; the master trades ``n`` times, then both leave."""
    sim = [*CLI, "sim-ea", "--socket", str(sock), "--log-format", "json"]
    slave = await trio.lowlevel.open_process(
        [*sim, "--role", "slave", "--account", "51001"], stderr=subprocess.PIPE
    )
    try:
        await read_until(slave, b"connected")
        master = await trio.run_process(
            [*sim, "--role", "master", "--account", "9001", "--trades", str(n), "--pace", "0.05"],
            capture_stderr=True,
        )
        assert f"{n} trades done".encode() in master.stderr
    finally:
        slave.send_signal(signal.SIGTERM)
        await slave.wait()


async def copied(store: Store) -> list[tuple[str, str]]:
    try:
        return [(d.account_id, d.decision) for d in await store.decisions()]
    finally:
        await store.aclose()


async def second_copier_refused(
    tmp_path: Path, first_url: str, second_url: str, second_sock: Path | None, *, holder: str
) -> str:
    """Start a copier on ``first_url``, then a second one; the second must refuse naming ``holder`` (plus
    the first's pid where the lock says it). The first keeps its socket and copies two trades after."""
    sock = tmp_path / "echo.sock"
    first_conf = write_config(tmp_path / "first.toml", sock, first_url, tmp_path / "first.log")
    second_conf = write_config(
        tmp_path / "second.toml", second_sock or sock, second_url, tmp_path / "second.log"
    )
    with trio.fail_after(90):
        first = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "all", "--config", str(first_conf)], stderr=subprocess.PIPE
        )
        try:
            await read_until(first, b"copying")
            inode = os.stat(sock).st_ino
            second = await trio.run_process(
                [*CLI, "run", "--role", "all", "--config", str(second_conf)],
                capture_stderr=True,
                check=False,
            )
            line = refusal(
                subprocess.CompletedProcess(second.args, second.returncode, "", second.stderr.decode())
            )
            assert holder in line and "in use by another copier" in line, line
            assert f"pid {first.pid} on " in line, "the holder is named: its pid"
            assert first.returncode is None, "the first copier runs on"
            assert sock.is_socket() and os.stat(sock).st_ino == inode, "its socket is untouched"
            await copy_trades(sock, 2)
        finally:
            first.send_signal(signal.SIGTERM)
            await first.wait()
    assert first.returncode == 0
    return line


async def test_a_second_copier_on_the_same_socket_refuses_and_the_first_keeps_copying(
    tmp_path: Path,
) -> None:
    await second_copier_refused(
        tmp_path,
        f"sqlite:///{tmp_path / 'a.db'}",
        f"sqlite:///{tmp_path / 'b.db'}",  # another store: the socket alone is the conflict
        None,
        holder=f"socket {tmp_path / 'echo.sock'}",
    )
    assert await copied(SqliteStore.open(tmp_path / "a.db")) == [("51001", "copy")] * 2
    assert not (tmp_path / "b.db").exists(), "the second copier created nothing"


async def test_a_second_copier_on_the_same_sqlite_store_refuses(tmp_path: Path) -> None:
    db = tmp_path / "echo.db"
    await second_copier_refused(
        tmp_path,
        f"sqlite:///{db}",
        f"sqlite:///{db}",
        tmp_path / "other.sock",  # another socket: the store alone is the conflict
        holder=f"the store {db}",
    )
    assert not (tmp_path / "other.sock").exists()
    assert await copied(SqliteStore.open(db)) == [("51001", "copy")] * 2


@pytest.mark.postgres
async def test_a_second_copier_on_the_same_postgres_schema_refuses(tmp_path: Path) -> None:
    with postgres_schema() as url:
        schema = url.rsplit("schema=", 1)[1]
        await second_copier_refused(
            tmp_path, url, url, tmp_path / "other.sock", holder=f"schema {schema} of database test"
        )
        assert await copied(await PostgresStore.open(url)) == [("51001", "copy")] * 2
        # the lock went with the first copier: a new one may take the schema
        store = await PostgresStore.open(url, exclusive=True)
        await store.aclose()


async def test_a_stopping_process_leaves_a_socket_it_does_not_own(tmp_path: Path) -> None:
    """A socket file that is not the one the listener bound (replaced under it) survives its stop."""
    from echo.adapters.pipe.unix import UnixPipeListener

    sock = tmp_path / "echo.sock"

    async def nothing(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(UnixPipeListener(sock).serve, nothing)
        sock.unlink()
        import socket as _socket

        other = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        other.bind(str(sock))  # someone else's socket now lives at the path
        nursery.cancel_scope.cancel()
    try:
        assert sock.is_socket(), "the listener removed a socket it did not create"
    finally:
        other.close()


@pytest.mark.postgres
async def test_a_copier_that_lost_its_postgres_lock_takes_it_again_or_stops_writing() -> None:
    """The server drops the store's sessions (as a restart would): on reconnecting, the store takes the
    schema's lock again; if another copier took it meanwhile, this one's calls fail instead of writing."""
    from echo.adapters.locks import InUse
    from echo.adapters.store.postgres import split_url
    from echo.ports.store import StoreError

    def drop_sessions(schema: str) -> None:
        import psycopg

        conninfo, _ = split_url(url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE application_name = %s OR application_name LIKE %s",
                (f"echo-store-{schema}", f"echo-copier pid {os.getpid()} %"),
            )

    with postgres_schema() as url:
        schema = url.rsplit("schema=", 1)[1]
        store = await PostgresStore.open(url, exclusive=True)
        try:
            drop_sessions(schema)
            with pytest.raises(StoreError):
                await store.trades()  # the call that meets the dead connection
            assert await store.trades() == []  # connected again, holding the lock again
            with pytest.raises(InUse, match=f"schema {schema} .* in use by another copier"):
                await PostgresStore.open(url, exclusive=True)
            drop_sessions(schema)
            with pytest.raises(StoreError):
                await store.trades()
            other = await PostgresStore.open(url, exclusive=True)  # takes the schema meanwhile
            try:
                with pytest.raises(StoreError, match="lost its hold on the store"):
                    await store.trades()
            finally:
                await other.aclose()
        finally:
            await store.aclose()


async def test_a_second_agent_on_the_same_socket_refuses(tmp_path: Path) -> None:
    """``run --role agent`` claims its socket the same way (no Core needs to be up for that)."""
    from tests.backends import free_port

    sock = tmp_path / "agent.sock"
    core = f"127.0.0.1:{free_port()}"

    def agent_config(n: int) -> Path:
        path = tmp_path / f"agent-{n}.toml"
        path.write_text(
            f'[agent]\nagent_id = "a{n}"\nsocket_path = "{sock}"\n'
            f'ledger_url = "sqlite:///{tmp_path / f"ledger-{n}.db"}"\n'
            f'[split]\ncore = "{core}"\n[log]\nfile = "{tmp_path / f"agent-{n}.log"}"\n'
        )
        return path

    with trio.fail_after(60):
        first = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "agent", "--config", str(agent_config(1))], stderr=subprocess.PIPE
        )
        try:
            await read_until(first, b"serving terminals")
            inode = os.stat(sock).st_ino
            second = await trio.run_process(
                [*CLI, "run", "--role", "agent", "--config", str(agent_config(2))],
                capture_stderr=True,
                check=False,
            )
            line = refusal(
                subprocess.CompletedProcess(second.args, second.returncode, "", second.stderr.decode())
            )
            assert f"socket {sock} is in use by another copier (pid {first.pid} " in line, line
            assert not (tmp_path / "ledger-2.db").exists(), "the second Agent opened nothing"
            assert first.returncode is None and os.stat(sock).st_ino == inode
        finally:
            first.send_signal(signal.SIGTERM)
            await first.wait()
    assert not sock.exists(), "the first Agent removes its own socket when it stops"
