"""Echo/Sock.mqh (the EAs' TCP link, on ws2_32) executed through the harness against a real TCP server:
a refused connect fails at once, a read never waits for the Agent, lines are put together from pieces,
a line is written whole, and the Agent closing the connection is seen."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.backends import once_per_run
from tests.mql4.harness_support import HARNESS, build

SELFTEST = HARNESS / "selftest"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield once_per_run(tmp_path_factory, "sock", lambda d: build(SELFTEST / "SockSelfTest.mq4", d))


class Program:
    def __init__(self, proc: trio.Process) -> None:
        self.proc, self.buf = proc, b""

    async def say(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        await self.proc.stdin.send_all(command.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = await self.proc.stdout.receive_some()
            assert chunk, "the program ended"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    async def read_until(self, expected: str) -> None:
        """Read (each read returns at once) until ``expected`` is the answer; the data is on its way."""
        while (got := await self.say("read")) != expected:
            assert got == "0 connected", got
            await trio.sleep(0.005)  # another process: polled, as its terminal timer does


async def test_sock_mqh_against_a_real_tcp_server(exe: Path) -> None:
    listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        program = Program(proc)
        try:
            assert await program.say(f"open {port}") == "refused"  # nobody listens yet
            listener.listen(1)
            assert await program.say(f"open {port}") == "open"
            conn, _ = await listener.accept()
            agent = trio.SocketStream(conn)
            # the Agent says nothing: a read returns at once (a blocking recv would hang here)
            for _ in range(3):
                assert await program.say("read") == "0 connected"
            await agent.send_all(b'{"a":1}\n{"b"')
            await program.read_until('1 connected {"a":1}')
            await agent.send_all(b":2}\n\n")
            await program.read_until('2 connected {"b":2} ')
            assert await program.say('write {"c":3}') == "written"
            got = b""
            while not got.endswith(b"\n"):
                got += await agent.receive_some()
            assert got == b'{"c":3}\n'
            await agent.aclose()  # the Agent goes away: the EA sees it and reconnects later
            await program.read_until("0 closed")
            assert await program.say("write late") == "broken"
        finally:
            assert proc.stdin is not None
            await proc.stdin.aclose()
            await proc.wait()
            listener.close()
