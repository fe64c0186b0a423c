"""Generate the Core <-> Agent contracts' Python code from ``protos/echo/v1``: protobuf's generated classes
(``*_pb2.py``, run by the upb C backend), their type stubs (``*_pb2.pyi``) and grpclib stubs
(``*_grpc.py``).

protoc names the modules after the proto package (``echo.v1``), which inside this project would be the
copier's own ``echo`` package; the imports between generated modules are rewritten to their real place,
``echo.adapters.transport.pb.echo.v1``. The descriptors themselves keep ``echo.v1`` (the wire names the
official grpcio client also uses). Usage: ``python protos/generate.py OUT_DIR`` (``make proto`` writes
``echo/adapters/transport/pb``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
PACKAGE = "echo.adapters.transport.pb"
_MODULE = re.compile(r"\becho\.v1\.(\w+_pb2)\b")
_FROM = re.compile(r"^from echo\.v1 import ", re.MULTILINE)


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "echo" / "v1").glob("*.proto"))
    bindir = Path(sys.executable).parent  # protoc-gen-grpclib_python comes with grpclib, beside python
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}",
         f"--python_out={out}", f"--pyi_out={out}", f"--grpclib_python_out={out}", *files],
        check=True, env=env, timeout=120,
    )  # fmt: skip
    for path in sorted((out / "echo" / "v1").iterdir()):
        text = path.read_text(encoding="utf-8")
        text = _FROM.sub(f"from {PACKAGE}.echo.v1 import ", text)
        text = _MODULE.sub(rf"{PACKAGE}.echo.v1.\1", text)
        path.write_text(text, encoding="utf-8")
    for package in (out, out / "echo", out / "echo" / "v1"):
        (package / "__init__.py").write_text("", encoding="utf-8")
    (out / "py.typed").write_text("", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python protos/generate.py OUT_DIR")
    generate(Path(sys.argv[1]))
