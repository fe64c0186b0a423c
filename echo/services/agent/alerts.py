"""Alerts only an Agent can raise: Core unreachable from it. When Core is down no one else can tell
people that nothing is being copied; an Agent that has had no stream to Core for longer than
``alerts.offline_after_s`` says so, and says so again when the stream is back."""

from __future__ import annotations

from typing import Protocol

import trio

from echo.domain.config import AlertsConfig
from echo.ports.alerts import Alert, AlertSink
from echo.ports.clock import Clock

POLL_S = 1.0
"""While connected, how often the link is looked at (a stream's end replaces its event; nothing is set)."""


class LinkState(Protocol):
    @property
    def connected(self) -> trio.Event:
        """Set while a stream to Core is up."""
        ...


async def watch_core_link(
    link: LinkState,
    sink: AlertSink,
    clock: Clock,
    config: AlertsConfig,
    agent_id: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.run)
        task_status.started()
        down_since: float | None = None
        alerted = False
        while True:
            event = link.connected
            if event.is_set():
                if alerted:
                    text = "the stream to Core is back"
                    sink.emit(
                        Alert("core_reachable", "info", text, clock.now_ms(), details={"agent_id": agent_id})
                    )
                down_since, alerted = None, False
                await trio.sleep(POLL_S)
                continue
            now = trio.current_time()
            if down_since is None:
                down_since = now
            left = config.offline_after_s - (now - down_since)
            if left <= 0 and not alerted:
                alerted = True
                text = (
                    f"no stream to Core for more than {config.offline_after_s:g} s: "
                    "nothing reaches or leaves this Agent's terminals"
                )
                sink.emit(
                    Alert(
                        "core_unreachable", "critical", text, clock.now_ms(), details={"agent_id": agent_id}
                    )
                )
            with trio.move_on_after(POLL_S if alerted else max(left, 0.0)):
                await event.wait()
