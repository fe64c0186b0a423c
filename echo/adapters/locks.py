"""What a process claims at start: an exclusive lock on a local resource (the terminals' socket, an SQLite
store) for as long as it runs, and the folders its files go in.

A lock is an ``flock`` (POSIX) or ``msvcrt.locking`` (Windows) on a small ``NAME.lock`` file beside the
resource, which also says who holds it (pid, host, since when). The operating system releases it when the
process ends, however it ends, so a lock file left behind by a killed process is free to take. The lock
file itself is never removed: removing it would let a second process lock a new file while the first
still holds the old one.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from echo.domain.paths import DATA_FOLDER

DEFAULT_DATA_FOLDER = Path(DATA_FOLDER)
"""The folder the default paths (``var/echo.db``, ``var/echo.sock``; ``%PROGRAMDATA%\\Echo\\echo.db`` on
Windows) live in: created when missing."""


class StartError(Exception):
    """Something the process needs cannot be had; the message is one line naming the thing."""


class InUse(StartError):
    """Another process holds the resource."""


def parent_folder(path: str | Path, what: str, error: type[Exception] = StartError) -> Path:
    """``path``'s folder, which must exist; only the default data folder (``var/``) is created. A missing
    folder is an ``error`` naming it (a typo in a path should not create a tree of folders somewhere)."""
    parent = Path(path).parent
    if parent.is_dir():
        return parent
    if parent == DEFAULT_DATA_FOLDER:
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise error(f"{what} {path}: cannot create the folder {parent}: {exc.strerror}") from exc
        return parent
    if parent.exists():
        raise error(f"{what} {path}: {parent} is not a folder")
    raise error(f"{what} {path}: the folder {parent} does not exist")


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False when another process has it."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # the first byte; the holder's note follows it
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    """An exclusive lock on ``path`` (a ``.lock`` file), naming ``what`` it guards in its errors.

    ``acquire`` raises InUse, naming the holder, when another process has it."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StartError(f"{self.what}: cannot open its lock file {self.path}: {exc.strerror}") from exc
        try:
            if not _try_lock(fd):
                raise InUse(f"{self.what} is in use by another copier ({self.holder(fd)}; lock {self.path})")
            note = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
            os.ftruncate(fd, 1)
            os.lseek(fd, 1, os.SEEK_SET)
            os.write(fd, note.encode() + b"\n")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def holder(fd: int) -> str:
        """Who holds the lock, as its holder wrote it (it may not have yet)."""
        try:
            os.lseek(fd, 1, os.SEEK_SET)
            note = os.read(fd, 256).decode(errors="replace").strip()
        except OSError:
            note = ""
        return note or "its holder has not said who it is yet"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _unlock(fd)
        finally:
            os.close(fd)  # closing alone would release it too

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
