"""EA connections over a Unix domain socket (POSIX). The bytes are the same as on a Windows named pipe.

One process serves a socket path: ``NAME.lock`` beside it is locked first (``adapters/locks``), so a second
copier on the same path stops at start, naming the first, and never removes the live socket. A socket
file left by a process that died is removed once the lock is ours. On stop, the process removes the
socket file only if it is still the one it bound (same device and inode).
"""

from __future__ import annotations

import os
import socket as _socket
from pathlib import Path

import trio

from echo.adapters.locks import FileLock, StartError, parent_folder
from echo.ports.pipe import ConnectionHandler


class UnixPipeListener:
    def __init__(self, path: str | Path, *, backlog: int = 128) -> None:
        self.path = Path(path)
        self.backlog = backlog
        self.description = f"unix:{self.path}"
        self._lock = FileLock(f"{self.path}.lock", f"socket {self.path}")

    def claim(self) -> None:
        """Take the socket's lock now (``serve`` takes it if this was not called): InUse names the process
        that serves it. A composition root calls it first, so a second copier stops before it opens
        anything else."""
        parent_folder(self.path, "agent.socket_path")
        self._lock.acquire()

    def release(self) -> None:
        """Let the lock go (``serve`` does when it ends)."""
        self._lock.release()

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.claim()  # before anything is removed: a live socket is never touched
        sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            if self.path.is_socket():
                self.path.unlink()  # a stale socket from a previous run (the lock says nobody serves it)
            await sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # owner only: another local user cannot speak for an account
            sock.listen(self.backlog)
            listener = trio.SocketListener(sock)
            bound = os.stat(self.path)
        except BaseException as exc:
            sock.close()
            self.release()
            if isinstance(exc, OSError):
                raise StartError(f"cannot serve the socket {self.path}: {exc.strerror or exc}") from exc
            raise
        try:
            async with listener:
                task_status.started()  # bound and listening: terminals can connect from here on
                await trio.serve_listeners(handler, [listener])
        finally:
            _unlink_if_same(self.path, bound)
            self.release()


def _unlink_if_same(path: Path, bound: os.stat_result) -> None:
    """Remove the socket file only if it is still the one this process bound (same device and inode)."""
    try:
        now = os.stat(path)
    except OSError:
        return
    if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
        path.unlink(missing_ok=True)


async def connect_unix(path: str | Path) -> trio.SocketStream:
    """What a terminal does: open the agent's socket."""
    return await trio.open_unix_socket(str(path))
