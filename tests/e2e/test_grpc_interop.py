"""Interop: the official grpcio client, generated here from `protos/` with grpcio-tools, talks to a
`run --role core` process: Ping answers, a wrong token is refused with PERMISSION_DENIED, and a right one
gets CoreHello with the negotiated protocol version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import json, queue, sys
import grpc
from echo.v1 import agent_pb2, agent_pb2_grpc

target, token = sys.argv[1], sys.argv[2]
out = {}
with grpc.insecure_channel(target) as channel:
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    pong = stub.Ping(agent_pb2.PingRequest(agent_id="interop", sent_at_ms=1), timeout=10)
    out["ping"] = {"core_version": pong.core_version, "protocol_version": pong.protocol_version}

    def hello(tok, done):
        yield agent_pb2.AgentMessage(
            hello=agent_pb2.AgentHello(
                agent_id="interop-" + tok, protocol_version=1, supports_lossless_delivery=True, token=tok
            )
        )
        done.get(timeout=10)  # keep the stream open until Core has answered

    for tok in ("wrong", token):
        done = queue.Queue()
        try:
            first = next(stub.StreamBidi(hello(tok, done), timeout=10))
            out[tok] = {
                "payload": first.WhichOneof("payload"),
                "protocol_version": first.hello.protocol_version,
                "compat_mode": first.hello.compat_mode,
                "core_version": first.hello.core_version,
            }
        except grpc.RpcError as exc:
            out[tok] = {"code": exc.code().name, "details": exc.details()}
        finally:
            done.put(None)
print(json.dumps(out))
"""


def test_the_grpcio_client_talks_to_a_core_process(tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    gen.mkdir()
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={gen}",
         f"--grpc_python_out={gen}", *(f"protos/{p}" for p in protos)],
        cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    for package in (gen / "echo", gen / "echo" / "v1"):
        (package / "__init__.py").touch()  # a regular package: shadows the copier's `echo` in the client
    (gen / "client.py").write_text(CLIENT, encoding="utf-8")

    config = tmp_path / "echo.toml"
    config.write_text('[split]\ntoken = "s3cret"\n[store]\nurl = "memory://"\n', encoding="utf-8")
    target = f"127.0.0.1:{free_port()}"
    core = subprocess.Popen(
        [sys.executable, "-m", "echo", "run", "--role", "core", "--config", str(config), "--listen", target],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert core.stderr is not None
        said = ""
        while "Agents connect to" not in said:
            line = core.stderr.readline()
            assert line, f"core ended before listening: {said}"
            said += line
        client = subprocess.run(
            [sys.executable, "client.py", target, "s3cret"],
            cwd=gen, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        out = json.loads(client.stdout)
    finally:
        core.terminate()
        core.wait(timeout=30)
    assert core.returncode == 0
    from echo import __version__

    assert out["ping"] == {"core_version": __version__, "protocol_version": 1}
    assert out["wrong"]["code"] == "PERMISSION_DENIED" and "invalid agent token" in out["wrong"]["details"]
    assert out["s3cret"] == {
        "payload": "hello",
        "protocol_version": 1,
        "compat_mode": False,
        "core_version": __version__,
    }
