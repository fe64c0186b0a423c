"""Several ways in at once (the Unix socket and ``agent.tcp_listen``): one PipeListener serving them all,
started once every one of them is, stopped together. One that cannot start stops the rest."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from echo.ports.pipe import ConnectionHandler, PipeListener


class ListenerGroup:
    def __init__(self, members: Sequence[PipeListener]) -> None:
        if not members:
            raise ValueError("a listener group needs at least one listener")
        self.members = tuple(members)
        self.description = " + ".join(m.description for m in self.members)

    def claim(self) -> None:
        """Claim what has a lock (a Unix socket, a named pipe) before anything else opens; a member that
        cannot be claimed releases those claimed before it."""
        claimed: list[PipeListener] = []
        try:
            for member in self.members:
                claim = getattr(member, "claim", None)
                if callable(claim):
                    claim()
                    claimed.append(member)
        except BaseException:
            if claimed:
                ListenerGroup(claimed).release()
            raise

    def release(self) -> None:
        for member in self.members:
            release = getattr(member, "release", None)
            if callable(release):
                release()

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            for member in self.members:
                await nursery.start(member.serve, handler)
            task_status.started()
