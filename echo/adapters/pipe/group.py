"""Several ways in at once (the Unix socket and ``agent.tcp_listen``): one PipeListener serving them all,
started once every one of them is, stopped together. One that cannot start stops the rest."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from echo.adapters.pipe.unix import UnixPipeListener
from echo.ports.pipe import ConnectionHandler, PipeListener


class ListenerGroup:
    def __init__(self, members: Sequence[PipeListener]) -> None:
        if not members:
            raise ValueError("a listener group needs at least one listener")
        self.members = tuple(members)
        self.description = " + ".join(m.description for m in self.members)

    def claim(self) -> None:
        """Claim what has a lock (a Unix socket) before anything else opens; see ``UnixPipeListener``."""
        claimed: list[UnixPipeListener] = []
        try:
            for member in self.members:
                if isinstance(member, UnixPipeListener):
                    member.claim()
                    claimed.append(member)
        except BaseException:
            for member in claimed:
                member.release()
            raise

    def release(self) -> None:
        for member in self.members:
            if isinstance(member, UnixPipeListener):
                member.release()

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            for member in self.members:
                await nursery.start(member.serve, handler)
            task_status.started()
