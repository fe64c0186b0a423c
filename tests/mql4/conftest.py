"""The EAs are translated and compiled once per test run (shared by the pytest-xdist workers)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from echo.domain.config import AgentConfig
from tests.backends import free_port, once_per_run
from tests.mql4.harness_support import MQL4, build


@pytest.fixture(scope="session")
def slave_exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield once_per_run(tmp_path_factory, "slave", lambda d: build(MQL4 / "EchoSlave.mq4", d))


@pytest.fixture(scope="session")
def master_exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield once_per_run(tmp_path_factory, "master", lambda d: build(MQL4 / "EchoMaster.mq4", d))


@dataclass(frozen=True)
class Wire:
    """How the compiled EAs reach the Agent: its named pipe (the shim's kernel32 calls on the Agent's Unix
    socket) or TCP (the shim's ws2_32 calls on real TCP to ``agent.tcp_listen``). The Agent serves both."""

    transport: str
    sock: Path
    tcp_listen: str

    @property
    def ea_socket(self) -> Path:
        """The Unix socket an EA's pipe calls reach: over TCP, one nobody serves (TCP is the only way in)."""
        return self.sock if self.transport == "pipe" else self.sock.with_name("nobody-serves.sock")

    @property
    def inputs(self) -> dict[str, str]:
        if self.transport == "pipe":
            return {}
        return {"Transport": "tcp", "TcpPort": self.tcp_listen.rpartition(":")[2]}

    def agent(self, **settings: Any) -> AgentConfig:
        return AgentConfig(socket_path=str(self.sock), tcp_listen=self.tcp_listen, **settings)


@pytest.fixture(params=["pipe", "tcp"])
def wire(request: pytest.FixtureRequest, tmp_path: Path) -> Wire:
    transport = str(request.param)
    return Wire(transport, tmp_path / "echo.sock", f"127.0.0.1:{free_port()}" if transport == "tcp" else "")
