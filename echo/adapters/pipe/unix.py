"""EA connections over a Unix domain socket (POSIX). The bytes are the same as on a Windows named pipe."""

from __future__ import annotations

import os
import socket as _socket
from pathlib import Path

import trio

from echo.ports.pipe import ConnectionHandler


class UnixPipeListener:
    def __init__(self, path: str | Path, *, backlog: int = 128) -> None:
        self.path = Path(path)
        self.backlog = backlog
        self.description = f"unix:{self.path}"

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # a stale socket from a previous run
        sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            await sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # owner only: another local user cannot speak for an account
            sock.listen(self.backlog)
            listener = trio.SocketListener(sock)
        except BaseException:
            sock.close()
            raise
        try:
            async with listener:
                task_status.started()  # bound and listening: terminals can connect from here on
                await trio.serve_listeners(handler, [listener])
        finally:
            self.path.unlink(missing_ok=True)


async def connect_unix(path: str | Path) -> trio.SocketStream:
    """What a terminal does: open the agent's socket."""
    return await trio.open_unix_socket(str(path))
