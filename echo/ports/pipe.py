"""The pipe port: where EA connections come from (a Unix socket, a Windows named pipe, TCP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

ConnectionHandler = Callable[[trio.abc.Stream], Awaitable[None]]


class PipeListener(Protocol):
    description: str

    async def serve(
        self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept EA connections forever, running ``handler(stream)`` for each in its own task.
        Calls ``task_status.started()`` once connections can be made."""
        ...
