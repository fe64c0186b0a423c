"""This machine's floor, measured in the same run as a benchmark so its figures can be read as ratios:
a round trip over a Unix socket between two processes (one line each way), a durable SQLite commit (WAL,
``synchronous=FULL``, one INSERT + COMMIT) and a gRPC round trip between two processes (one message each
way on a grpclib bidirectional stream, the shape of the Core <-> Agent link). Microseconds, p50 and p99.

``copy_floor_us`` is what an all-in-one copy cannot go below: two socket hops (master -> copier ->
slave) and one durable commit; ``split_copy_floor_us`` adds the gRPC round trip (Agent -> Core ->
Agent). Run alone it prints its JSON: ``python bench/floor.py``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_ECHO_SERVER = """
import socket, sys
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1]); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
f = conn.makefile("rb")
for line in f:
    conn.sendall(line)
"""


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    v = sorted(samples_ns)
    return {
        "n": len(v),
        "p50": round(v[len(v) // 2] / 1000, 1),
        "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))] / 1000, 1),
    }


def unix_round_trip(n: int = 3000) -> dict[str, float]:
    """One 100-byte line to another process over a Unix socket and back."""
    with tempfile.TemporaryDirectory(prefix="echo-floor-") as tmp:
        path = str(Path(tmp) / "s")
        server = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, path], stdout=subprocess.PIPE)
        try:
            assert server.stdout is not None
            server.stdout.readline()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            line = b"x" * 99 + b"\n"
            samples = []
            for i in range(n + 200):
                start = time.perf_counter_ns()
                sock.sendall(line)
                got = b""
                while not got.endswith(b"\n"):
                    got += sock.recv(4096)
                if i >= 200:
                    samples.append(time.perf_counter_ns() - start)
            sock.close()
        finally:
            server.kill()
            server.wait()
    return _percentiles(samples)


def sqlite_commit(n: int = 500) -> dict[str, float]:
    """INSERT + COMMIT of a 200-byte row, WAL journal, ``synchronous=FULL`` (the copier's default)."""
    with tempfile.TemporaryDirectory(prefix="echo-floor-") as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        samples = []
        for i in range(n + 50):
            start = time.perf_counter_ns()
            db.execute("BEGIN")
            db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 200,))
            db.execute("COMMIT")
            if i >= 50:
                samples.append(time.perf_counter_ns() - start)
        db.close()
    return _percentiles(samples)


async def _grpc_server(port: int) -> None:
    from grpclib.server import Server

    from echo.adapters.transport.pb.echo.v1 import agent_grpc
    from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb

    class Echo(agent_grpc.AgentServiceBase):
        async def StreamBidi(self, stream: Any) -> None:
            reply = pb.CoreMessage(drop_command=pb.DropCommand(account_id="51001", command_id="c" * 36))
            async for _ in stream:
                await stream.send_message(reply)

        async def Ping(self, stream: Any) -> None:
            await stream.recv_message()
            await stream.send_message(pb.PingResponse())

    server = Server([Echo()])
    await server.start("127.0.0.1", port)
    print("ready", flush=True)
    await server.wait_closed()


async def _grpc_client(port: int, n: int) -> list[int]:
    from grpclib.client import Channel

    from echo.adapters.transport.pb.echo.v1 import agent_grpc
    from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb

    channel = Channel("127.0.0.1", port)
    samples = []
    try:
        async with agent_grpc.AgentServiceStub(channel).StreamBidi.open() as stream:
            msg = pb.AgentMessage(command_ack=pb.CommandAck(account_id="51001", command_id="c" * 36))
            for i in range(n + 200):
                start = time.perf_counter_ns()
                await stream.send_message(msg)
                await stream.recv_message()
                if i >= 200:
                    samples.append(time.perf_counter_ns() - start)
            await stream.end()
    finally:
        channel.close()
    return samples


def grpc_round_trip(n: int = 2000) -> dict[str, float]:
    """One message each way on a grpclib bidirectional stream to another process (loopback TCP)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = subprocess.Popen(
        [sys.executable, __file__, "--grpc-server", str(port)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        samples = asyncio.run(_grpc_client(port, n))
    finally:
        server.kill()
        server.wait()
    return _percentiles(samples)


def measure() -> dict[str, Any]:
    unix, commit, grpc = unix_round_trip(), sqlite_commit(), grpc_round_trip()
    copy_floor = 2 * unix["p50"] + commit["p50"]
    return {
        "unix_socket_round_trip_us": unix,
        "sqlite_durable_commit_us": commit,
        "grpc_round_trip_us": grpc,
        "copy_floor_us": round(copy_floor, 1),
        "split_copy_floor_us": round(copy_floor + grpc["p50"], 1),
        "loadavg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


def ratio(value_ms: float, floor_us: float) -> float:
    """A latency in milliseconds as a multiple of a floor in microseconds."""
    return round(value_ms * 1000 / floor_us, 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--grpc-server":
        asyncio.run(_grpc_server(int(sys.argv[2])))
    else:
        print(json.dumps(measure()))
