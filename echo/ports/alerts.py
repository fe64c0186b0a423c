"""Alerts to people: what an alert says, and the sink Core (and the Agent) hand alerts to. A sink never
blocks and never raises: it queues, and delivers in a task of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import trio

from echo.domain.config import AlertsConfig

Severity = Literal["info", "warning", "error", "critical"]


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    """One of ``echo.domain.config.ALERT_KINDS`` (or ``test``)."""
    severity: Severity
    text: str
    """One sentence for a person."""
    at_ms: int
    account_id: str | None = None
    trade_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """What deduplication compares: the same kind, account and trade."""
        return (self.kind, self.account_id or "", self.trade_id or "")


class AlertSink(Protocol):
    def emit(self, alert: Alert) -> None:
        """Queue an alert (deduplicated, filtered by ``alerts.kinds``); returns at once."""
        ...

    def configure(self, config: AlertsConfig) -> None:
        """New ``[alerts]`` settings, applied while running."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued alerts until cancelled."""
        ...


class NoAlerts:
    """The sink when no webhook is configured: alerts stay log lines."""

    def emit(self, alert: Alert) -> None:
        pass

    def configure(self, config: AlertsConfig) -> None:
        pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
