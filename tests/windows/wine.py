"""The Windows build of Python under Wine (``tests/windows/prepare.py``), for the tests that run Echo as it
runs on Windows. Outside CI a machine without Wine skips them (one summary line); with ``CI=true`` they
fail instead (``.ci/run`` installs Wine and prepares the Python first)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.backends import unavailable
from tests.windows import prepare


@dataclass(frozen=True)
class WinePython:
    home: Path
    """The prepared folder: ``python/python.exe`` and ``prefix/`` (the WINEPREFIX)."""

    @property
    def env(self) -> dict[str, str]:
        return prepare.wine_env(self.home / "prefix")

    def argv(self, *args: str) -> list[str]:
        return ["wine", str(self.home / "python" / "python.exe"), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``python.exe ARGS`` to the end; stdin from /dev/null and output through pipes (the Windows
        Python cannot write to a redirected file handle under Wine)."""
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    async def start(self, *args: str) -> trio.Process:
        """``python.exe ARGS`` running, its stderr (with stdout) a pipe to read."""
        return await trio.lowlevel.open_process(
            self.argv(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


def windows_path(p: Path) -> str:
    """How the Windows Python names a Linux path (Wine's Z: drive is /)."""
    return prepare.wine_path(p)


@functools.cache
def _prepared() -> Path | str:
    if shutil.which("wine") is None:
        return "wine is not installed (apt-get install wine wine64)"
    import fcntl

    prepare.CACHE.parent.mkdir(parents=True, exist_ok=True)
    # one preparer at a time: two pytest-xdist workers may both find it not prepared yet
    with (prepare.CACHE.parent / "winpy.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return prepare.prepare()
        except SystemExit as exc:
            return f"the Windows Python could not be prepared: {exc}"


def wine_python() -> WinePython:
    """The prepared Windows Python, or the test is skipped (failed with CI=true) naming why not."""
    got = _prepared()
    if isinstance(got, str):
        unavailable("wine", got)
    assert isinstance(got, Path)
    return WinePython(got)


async def read_until(proc: trio.Process, marker: bytes, seen: bytearray) -> None:
    """Read ``proc``'s stderr into ``seen`` until ``marker`` appears in it."""
    assert proc.stderr is not None
    while marker not in seen:
        chunk = await proc.stderr.receive_some()
        assert chunk, f"process ended before saying {marker!r}: {seen.decode(errors='replace')}"
        seen += chunk
