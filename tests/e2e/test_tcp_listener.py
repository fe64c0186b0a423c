"""Terminals over TCP (``agent.tcp_listen``): a simulated master on TCP and a simulated slave on the Unix
socket of the same Agent copy through it; an address other machines can reach is refused unless allowed
(and then needs ``agent.token``); a port in use is one line naming the key."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from echo.adapters.locks import StartError
from echo.adapters.pipe.tcp import connect_tcp
from echo.adapters.pipe.unix import connect_unix
from echo.app.root import Copier, run_all_in_one
from echo.domain.config import AgentConfig, Config, ConfigError, CoreConfig, StoreConfig, config_from_dict
from echo.domain.types import Side
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port
from tests.e2e.test_mistakes import CLI, config, echo, one_line

pytestmark = pytest.mark.e2e


def _now() -> int:
    return time.time_ns() // 1_000_000


async def test_a_master_over_tcp_and_a_slave_on_the_unix_socket_copy_through_one_agent(
    tmp_path: Path,
) -> None:
    sock, listen = tmp_path / "echo.sock", f"127.0.0.1:{free_port()}"
    conf = Config(
        core=CoreConfig(fixed_lot=0.2),
        agent=AgentConfig(agent_id="agent-tcp", socket_path=str(sock), tcp_listen=listen, token="t0ken"),
        store=StoreConfig(url="memory://"),
    )
    market = SimMarket(random.Random(1))
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(run_all_in_one, conf)
            core = copier.core
            master = SimMasterEA(
                "9001",
                master_broker(market, random.Random(2)),
                lambda: connect_tcp(listen),
                _now,
                random.Random(3),
                token="t0ken",
            )
            slave = SimSlaveEA(
                "51001",
                slave_broker(0, market, random.Random(4)),
                lambda: connect_unix(sock),
                _now,
                token="t0ken",
            )
            await nursery.start(master.run)
            await nursery.start(slave.run)
            await core.wait_for(
                lambda: all(a in core.accounts and core.accounts[a].online for a in ("9001", "51001"))
            )
            # garbage over TCP: an error line naming it, and the Agent keeps serving everyone
            peer = await connect_tcp(listen)
            await peer.send_all(b"\xff\xfe not json\n{}\n")
            reply = b""
            while reply.count(b"\n") < 2:
                reply += await peer.receive_some()
            assert b"ERR_PROTOCOL_INVALID_UTF8" in reply and b"ERR_PROTOCOL" in reply.split(b"\n")[1]
            await peer.aclose()
            trade = await master.open("XAUUSD", Side.BUY, 1.0)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.stats.get("copied") == 1 and core.in_flight == 0)
            assert [o.lots for o in slave.broker.open_orders()] == [0.2]
            await master.close(trade)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert slave.broker.open_orders() == []
            nursery.cancel_scope.cancel()
    (started,) = [e for e in logs if e["event"] == "agent_started"]
    assert started["listen"] == f"unix:{sock} + tcp:{listen}"  # both at once


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "example.com", "[::]"])
def test_an_address_other_machines_reach_is_refused_unless_allowed(host: str) -> None:
    listen = f"{host}:7701"
    with pytest.raises(ConfigError, match=r"agent\.tcp_listen .*agent\.tcp_allow_remote"):
        config_from_dict({"agent": {"tcp_listen": listen}})
    with pytest.raises(ConfigError, match=r"agent\.tcp_listen .*agent\.token"):
        config_from_dict({"agent": {"tcp_listen": listen, "tcp_allow_remote": True}})
    allowed = config_from_dict({"agent": {"tcp_listen": listen, "tcp_allow_remote": True, "token": "s3cret"}})
    assert allowed.agent.tcp_listen == listen


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.booleans(), st.text(max_size=8))
def test_any_tcp_listen_value_is_taken_or_refused_by_name(listen: str, remote: bool, token: str) -> None:
    try:
        conf = config_from_dict({"agent": {"tcp_listen": listen, "tcp_allow_remote": remote, "token": token}})
    except ConfigError as exc:
        assert "agent." in str(exc)
    else:
        assert conf.agent.tcp_listen == listen


@pytest.mark.parametrize("listen", ["127.0.0.1:7701", "localhost:7701", "[::1]:7701", "127.3.4.5:1"])
def test_loopback_addresses_need_nothing_more(listen: str) -> None:
    assert config_from_dict({"agent": {"tcp_listen": listen}}).agent.tcp_listen == listen


@pytest.mark.parametrize("listen", ["7701", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":7701"])
def test_a_malformed_address_is_refused_by_name(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"agent\.tcp_listen must be HOST:PORT"):
        config_from_dict({"agent": {"tcp_listen": listen}})


def test_the_cli_refuses_a_remote_address_in_one_line(tmp_path: Path) -> None:
    conf = config(tmp_path)
    text = conf.read_text().replace("[agent]\n", '[agent]\ntcp_listen = "0.0.0.0:7701"\n')
    conf.write_text(text)
    one_line(
        echo("run", "--config", str(conf), cwd=tmp_path), "agent.tcp_listen 0.0.0.0:7701", "tcp_allow_remote"
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_is_one_line_naming_the_key(tmp_path: Path, taken_port: int) -> None:
    conf = config(tmp_path)
    conf.write_text(
        conf.read_text().replace("[agent]\n", f'[agent]\ntcp_listen = "127.0.0.1:{taken_port}"\n')
    )
    done = echo("run", "--config", str(conf), cwd=tmp_path)
    one_line(done, f"agent.tcp_listen 127.0.0.1:{taken_port}", "in use")
    assert not (tmp_path / "echo.sock").exists(), "the Unix socket is not left behind"


def test_simulated_terminals_copy_over_tcp_through_the_cli(tmp_path: Path) -> None:
    """As a person tries it: ``run`` with ``agent.tcp_listen``, and ``sim-ea --tcp`` terminals."""
    listen = f"127.0.0.1:{free_port()}"
    conf = config(tmp_path)
    conf.write_text(conf.read_text().replace("[agent]\n", f'[agent]\ntcp_listen = "{listen}"\n'))
    copier = subprocess.Popen(
        [*CLI, "run", "--config", str(conf)], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    slave: subprocess.Popen[str] | None = None
    try:
        assert copier.stderr is not None
        started = copier.stderr.readline()
        assert f"terminals connect to {tmp_path / 'echo.sock'} and TCP {listen}" in started, started
        slave = subprocess.Popen(
            [*CLI, "sim-ea", "--role", "slave", "--account", "51001", "--tcp", listen],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert slave.stderr is not None
        assert f"sim slave 51001 connected to TCP {listen}" in slave.stderr.readline()
        master = echo(
            "sim-ea", "--role", "master", "--account", "9001", "--tcp", listen, "--burst", "3", cwd=tmp_path
        )
        assert master.returncode == 0, master.stderr
        assert "3 trades done" in master.stderr
    finally:
        for process in (slave, copier):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    assert copier.returncode == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_the_listener_serves_loopback_addresses_as_written(host: str) -> None:
    from echo.adapters.pipe.tcp import TcpPipeListener

    listen = f"{host}:{free_port()}"

    async def echo_back(stream: trio.abc.Stream) -> None:
        await stream.send_all(await stream.receive_some())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(TcpPipeListener(listen).serve, echo_back)
            except StartError as exc:
                if host != "[::1]" or os.environ.get("CI") == "true":
                    raise
                pytest.skip(f"no IPv6 loopback here: {exc}")  # a machine without IPv6
            stream = await connect_tcp(listen)
            await stream.send_all(b"ping\n")
            assert await stream.receive_some() == b"ping\n"
            await stream.aclose()
            nursery.cancel_scope.cancel()


def test_sim_ea_with_nobody_on_the_port_is_one_line(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    one_line(echo("sim-ea", "--role", "slave", "--account", "51001", "--tcp", listen, cwd=tmp_path), listen)
    one_line(
        echo("sim-ea", "--role", "slave", "--account", "51001", "--tcp", "nowhere", cwd=tmp_path), "--tcp"
    )
