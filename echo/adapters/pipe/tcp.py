"""EA connections over TCP (``agent.tcp_listen``): the same line protocol and limits as the Unix socket and
the named pipe. For terminals that cannot reach those, such as MT4 under Wine, whose named pipes exist only
inside Wine, while its Winsock calls are the host's sockets.

Loopback only unless the configuration says otherwise (``agent.tcp_allow_remote``, checked with the rest of
the configuration, which then requires ``agent.token``): a TCP port, unlike an owner-only socket file, is
open to every local user, so ``agent.token`` is what keeps them from speaking for an account.
"""

from __future__ import annotations

import trio

from echo.adapters.locks import StartError
from echo.domain.config import parse_host_port
from echo.ports.pipe import ConnectionHandler


class TcpPipeListener:
    def __init__(self, listen: str, *, backlog: int = 128) -> None:
        self.listen = listen
        host, self.port = parse_host_port(listen, "agent.tcp_listen")
        self.host = host.strip("[]")  # an IPv6 address is written in brackets
        self.backlog = backlog
        self.description = f"tcp:{listen}"

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host, backlog=self.backlog)
        except OSError as exc:
            raise StartError(
                f"agent.tcp_listen {self.listen}: cannot serve TCP there: {exc.strerror or exc}"
            ) from exc
        try:
            task_status.started()  # listening: terminals can connect from here on
            await trio.serve_listeners(handler, listeners)  # (trio's TCP streams set TCP_NODELAY)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)


async def connect_tcp(listen: str) -> trio.SocketStream:
    """What a terminal does over TCP: connect to ``HOST:PORT``."""
    host, port = parse_host_port(listen, "agent.tcp_listen")
    return await trio.open_tcp_stream(host.strip("[]"), port)
