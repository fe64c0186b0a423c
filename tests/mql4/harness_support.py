"""Build MQL4 sources through the harness (translate to C++, compile with g++, or with MinGW for Windows)
for the tests, and run the compiled EAs as terminals (``Terminal``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.backends import unavailable

ROOT = Path(__file__).resolve().parents[2]
MQL4 = ROOT / "mql4"
HARNESS = MQL4 / "harness"
MINGW = "x86_64-w64-mingw32-g++-posix"
"""The MinGW-w64 C++ compiler (Debian's g++-mingw-w64-x86-64, POSIX threads) the Windows build uses."""
_FLAGS = [
    "-std=c++17",
    "-O1",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",  # MQL4 event handlers keep parameters they may not use
    "-I",
    str(HARNESS / "shim"),
]


def _translate(source: Path, out_dir: Path) -> Path:
    cpp = out_dir / (source.stem + ".cpp")
    subprocess.run(
        [sys.executable, str(HARNESS / "translate.py"), str(source), "-o", str(cpp)], check=True, timeout=60
    )
    return cpp


def _compile(cmd: list[str]) -> None:
    done = subprocess.run(cmd, timeout=300, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd[:1])} failed:\n{done.stderr[-6000:]}"


def build(source: Path, out_dir: Path) -> Path:
    """Translate and compile ``source``; returns the executable. g++ missing: skipped (failed in CI)."""
    gxx = shutil.which("g++")
    if gxx is None:
        unavailable("g++", "no g++ on PATH (Debian: apt-get install g++)")
    cpp = _translate(source, out_dir)
    exe = out_dir / source.stem
    _compile([str(gxx), *_FLAGS, "-o", str(exe), str(cpp)])
    return exe


def build_windows(source: Path, out_dir: Path) -> Path:
    """Translate ``source`` and cross-compile it with MinGW into a Windows executable (``.exe``) whose pipe
    and socket calls are the real kernel32 and ws2_32 ones (``shim/win32.cpp``). Statically linked, so that it
    runs under Wine with no MinGW DLLs beside it. MinGW missing: skipped (failed in CI)."""
    gxx = shutil.which(MINGW)
    if gxx is None:
        unavailable("mingw", f"no {MINGW} on PATH (Debian: apt-get install g++-mingw-w64-x86-64)")
    cpp = _translate(source, out_dir)
    exe = out_dir / (source.stem + ".exe")
    win32 = HARNESS / "shim" / "win32.cpp"
    _compile([str(gxx), *_FLAGS, "-static", "-o", str(exe), str(cpp), str(win32), "-lws2_32"])
    return exe


def ask(exe: Path, requests: list[str]) -> list[str]:
    """Send request lines to a self-test program; its answers, one per request."""
    done = subprocess.run(
        [str(exe)], input="".join(r + "\n" for r in requests), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[: len(requests)]


@dataclass(frozen=True)
class Order:
    """One order of a terminal's broker, as the shim keeps it on disk (``ECHO_BROKER_STATE``)."""

    pool: str
    """``open`` or ``hist``."""
    ticket: int
    symbol: str
    lots: float
    stop_loss: float
    comment: str


class Terminal:
    """A compiled EA process with its own broker, files folder, broker state on disk and control channel
    (a Unix socket path, or a TCP port on 127.0.0.1 for the Windows build). ``argv`` runs it (``wine EXE``
    for a Windows build); ``env`` is its environment, to which the shim's variables are added, named the
    way the EA's system names paths (``path_name``), and the EA's ``inputs`` (its properties dialog)."""

    def __init__(
        self,
        argv: Sequence[str],
        home: Path,
        broker: str,
        env: Mapping[str, str],
        control: Path | int,
        inputs: Mapping[str, str],
        path_name: Callable[[Path], str] = str,
    ) -> None:
        home.mkdir()
        (home / "broker.txt").write_text(broker, encoding="utf-8")
        (home / "files").mkdir()
        self.home = home
        self.control = control
        self.stop_file = home / "stop"
        named = {
            "ECHO_BROKER": home / "broker.txt",
            "ECHO_FILES": home / "files",
            "ECHO_BROKER_STATE": home / "broker-state.txt",
            "ECHO_STOP_FILE": self.stop_file,
        }
        self.env = {**env, **{k: path_name(v) for k, v in named.items()}}
        if isinstance(control, Path):
            self.env["ECHO_CONTROL"] = str(control)
        else:
            self.env["ECHO_CONTROL_PORT"] = str(control)
        self.env.update({f"ECHO_INPUT_{k}": v for k, v in inputs.items()})
        self.argv = list(argv)
        self.proc: trio.Process | None = None
        self._ctl: trio.SocketStream | None = None
        self._buf = b""

    async def start(self) -> None:
        self.stop_file.unlink(missing_ok=True)
        self.proc = await trio.lowlevel.open_process(self.argv, env=self.env, stdin=subprocess.DEVNULL)

    async def _drop_control(self) -> None:
        if self._ctl is not None:
            await self._ctl.aclose()
            self._ctl = None
            self._buf = b""

    async def stop(self) -> None:
        """The terminal closed: the EA's OnDeinit runs, then it ends (status 0)."""
        await self._drop_control()
        if self.proc is not None:
            self.stop_file.touch()
            with trio.fail_after(30):
                status = await self.proc.wait()
            self.proc = None
            assert status == 0, f"{self.home.name} ended with status {status}"

    async def kill(self) -> None:
        """The terminal's process killed: no OnDeinit, nothing flushed on the way out."""
        await self._drop_control()
        if self.proc is not None:
            self.proc.kill()
            await self.proc.wait()
            self.proc = None

    async def order(self, command: str) -> str:
        """What a person does in the terminal: open, modify, close (answered "ok ..." / "error ...")."""
        if self._ctl is None:  # listening since before the EA's handshake, which the test waited for
            if isinstance(self.control, Path):
                self._ctl = await trio.open_unix_socket(str(self.control))
            else:
                self._ctl = await trio.open_tcp_stream("127.0.0.1", self.control)
        await self._ctl.send_all(command.encode() + b"\n")
        while b"\n" not in self._buf:
            chunk = await self._ctl.receive_some()
            assert chunk, f"{self.home.name}: the control channel closed"
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply = line.decode()
        assert reply.startswith("ok"), (command, reply)
        return reply

    def orders(self) -> list[Order]:
        """The broker's orders as last saved (open, then history)."""
        path = self.home / "broker-state.txt"
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            f = line.split("\t")
            if f[0] in ("open", "hist"):
                out.append(Order(f[0], int(f[1]), f[3], float(f[4]), float(f[6]), f[12]))
        return out

    def open_lots(self) -> list[float]:
        return sorted(o.lots for o in self.orders() if o.pool == "open")

    def opened(self) -> Counter[str]:
        """How many times each copied trade was opened here: orders by comment, a partial close's remainder
        (``from #TICKET``) not counted."""
        return Counter(o.comment for o in self.orders() if not o.comment.startswith("from #"))
