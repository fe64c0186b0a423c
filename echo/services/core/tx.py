"""The transaction: what handling one message group produces (one batch to persist, then the sends), and
``record``, the one call that writes a fact both as an event row and as a log line with the same fields."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Literal

import structlog
from structlog.typing import FilteringBoundLogger

from echo.domain import messages as m
from echo.domain.errors import ErrorCode
from echo.pipe.jsonenc import to_json
from echo.ports.store import Batch, EventRow
from echo.services import instruments

log = structlog.get_logger("echo.core")

Level = Literal["info", "warning", "error", "critical"]


class Tx:
    """What handling one message group produces: one batch to persist, then the sends."""

    def __init__(self) -> None:
        self.batch = Batch()
        self.sends: list[m.ToAccount] = []
        self.drops: list[m.DropCommand] = []
        """Commands given up: their Agents stop delivering them (sent after the commit, like ``sends``)."""
        self.released: list[tuple[str, m.DropCommand]] = []
        """(former Agent, command): an account moved away from that Agent, which lets go of what it holds
        for the account (the new owner gets the command instead)."""
        self.direct: list[tuple[str, m.ToAccount]] = []
        """(Agent, message) for a terminal Core keeps no account of: a refused handshake's verdict, a
        refused event's ack."""
        self.done = False
        self.ok = True
        """Recorded (or nothing to record); False: the journal refused it and it is rolled back."""
        self.held = False
        """The store was unavailable: the batch stays first in the journal, in order, and whoever writes the
        journal once the store is back sends what this transaction holds (its worker has moved on)."""
        self.retries: list[m.ToAccount] = []
        """While held: RETRY for each master event it acknowledged, sent at once by its worker."""
        self._log: FilteringBoundLogger | None = None

    @property
    def log(self) -> FilteringBoundLogger:
        """Core's logger, resolved once for this transaction under the log configuration in force: the
        module's ``structlog.get_logger`` proxy resolves it again on every call (a couple of
        microseconds a line, even a line its level drops), and the engine logs several lines per copy."""
        bound = self._log
        if bound is None:
            bound = self._log = log.bind()
        return bound

    def record(
        self,
        row_id: str,
        at_ms: int,
        kind: str,
        /,
        *,
        level: Level | None = "info",
        log_as: str | None = None,
        log_extra: dict[str, Any] | None = None,
        trade_id: str | None = None,
        account_id: str | None = None,
        command_id: str | None = None,
        trace_id: str | None = None,
        **data: Any,
    ) -> None:
        """One fact: an event row ``kind`` with ``data``, and (unless ``level`` is None) the log line
        ``log_as`` (``core_<kind>`` by default) with the same fields plus ``log_extra``."""
        self.batch.events.append(
            EventRow(row_id, at_ms, kind, trade_id, account_id, command_id, trace_id, to_json(data))
        )
        instruments.event(kind)
        if level is None:
            return
        ids = {"trade_id": trade_id, "account_id": account_id, "command_id": command_id, "trace_id": trace_id}
        line = {k: v for k, v in ids.items() if v is not None}
        getattr(self.log, level)(log_as or f"core_{kind}", **line, **data, **(log_extra or {}))

    def ack(
        self,
        master: str,
        trade_id: str,
        trace_id: str,
        status: m.AckStatus,
        event_id: str | None = None,
        message: str = "",
        error_code: ErrorCode = ErrorCode.NO_ERROR,
    ) -> None:
        """Acknowledge a master event (sent after the commit)."""
        self.sends.append(
            m.ToAccount(master, m.TradeIntentAck(trade_id, trace_id, status, event_id, error_code, message))
        )


def merge(group: list[Tx]) -> Batch:
    """The batches of several transactions as one write, in the order they were applied."""
    if len(group) == 1:
        return group[0].batch
    merged = Batch(sync=any(tx.batch.sync for tx in group))
    for name in _ROW_PARTS:
        rows: list[Any] = getattr(merged, name)
        for tx in group:
            rows.extend(getattr(tx.batch, name))
    return merged


_ROW_PARTS = tuple(f.name for f in fields(Batch) if f.name != "sync")


def settle_sync(tx: Tx) -> Tx:
    """Mark a transaction that sends nothing as one whose batch need not wait for the disk: nothing
    leaves on the strength of it (what Core was told, the peer tells again if it is lost; what Core says
    is written by a synced batch first, which makes everything written before it durable too)."""
    tx.batch.sync = bool(tx.sends or tx.drops or tx.released or tx.direct or tx.retries)
    return tx


def retry_acks(tx: Tx) -> list[m.ToAccount]:
    """RETRY in place of each acknowledgement of a master event the transaction holds."""
    retry: list[m.ToAccount] = []
    for out in tx.sends:
        if isinstance(out.message, m.TradeIntentAck):
            ack = out.message
            retry.append(
                m.ToAccount(
                    out.account_id,
                    m.TradeIntentAck(
                        ack.trade_id,
                        ack.trace_id,
                        m.AckStatus.RETRY,
                        ack.event_id,
                        ErrorCode.ERR_UNKNOWN,
                        "core could not record the message; send it again",
                    ),
                )
            )
    return retry
