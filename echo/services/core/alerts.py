"""Alerts from what Core committed: the facts of a recorded batch (omissions for a failure, an open the
slave's broker refused, a slave closed by its broker's stop-out or SL, a command given up, a REJECTED
handshake, an account offline and back) become alerts for the sink, after the commit and never before.
An account offline longer than ``alerts.offline_after_s`` is an alert (timed here), and its return is
another."""

from __future__ import annotations

import json
from typing import Any

import trio

from echo.domain import messages as m
from echo.domain.config import AlertsConfig
from echo.domain.errors import OMITTED_AT_SLAVE
from echo.ports.alerts import Alert, AlertSink, Severity
from echo.ports.clock import Clock
from echo.ports.store import Batch

FAILED_OMISSIONS = frozenset(
    {
        "slave_offline",
        "account_rejected",
        "symbol_rejected",
        "symbol_not_mapped",
        "max_delay_exceeded",
        "quote_missing",
        "tick_value_missing",
    }
)
"""Omission reasons that are a failure (a copy that should have been made), not the account's own policy
(a trading window, a spread or slippage limit, no stop loss, a lot below the broker's minimum)."""


def _data(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def alerts_of(batch: Batch) -> tuple[list[Alert], list[tuple[str, bool, int]]]:
    """The alerts a committed batch holds, and the accounts it took offline or online ((account, online,
    at_ms), in order) for the offline timer."""
    out: list[Alert] = []
    presence: list[tuple[str, bool, int]] = []
    for d in batch.decisions:
        if d.decision == "omit" and d.reason in FAILED_OMISSIONS:
            out.append(
                Alert(
                    "missed_trade",
                    "error",
                    f"the trade was not copied to this slave: {d.reason.replace('_', ' ')}",
                    d.at_ms,
                    d.account_id,
                    d.trade_id,
                    {"reason": d.reason, **_data(d.detail)},
                )
            )
    for e in batch.events:
        if e.kind == "slave_closed_by_broker":
            data = _data(e.data)
            reason = data.get("reason")
            if reason == "STOP_OUT":
                lots = data.get("lots")
                text = f"the broker stopped out ticket {data.get('ticket')} ({lots} lots); not reopened"
                out.append(Alert("stop_out", "critical", text, e.at_ms, e.account_id, e.trade_id, data))
            elif reason == "SL":
                text = f"ticket {data.get('ticket')} closed by its own stop loss; not reopened"
                out.append(Alert("closed_by_sl", "warning", text, e.at_ms, e.account_id, e.trade_id, data))
        elif e.kind == "command_gave_up":
            data = _data(e.data)
            kind = data.get("command_kind", "command")
            text = f"no result for the {kind} after every send ({data.get('reason', '')}); " + (
                "the copy is missed" if kind == "execute" else "the slave position needs a person"
            )
            sev: Severity = "error" if kind == "execute" else "critical"
            out.append(Alert("delivery_gave_up", sev, text, e.at_ms, e.account_id, e.trade_id, data))
        elif e.kind == "account_offline" and e.account_id:
            presence.append((e.account_id, False, e.at_ms))
        elif e.kind == "account_online" and e.account_id:
            presence.append((e.account_id, True, e.at_ms))
    for ev in batch.evaluations:
        if ev.status == "REJECTED":
            errors = [i.get("code", i) if isinstance(i, dict) else i for i in _list(ev.global_errors)]
            out.append(
                Alert(
                    "handshake_rejected",
                    "error",
                    "the terminal's handshake was REJECTED: nothing is copied to or from it"
                    + (f" ({', '.join(map(str, errors))})" if errors else ""),
                    ev.evaluated_at_ms,
                    ev.account_id,
                    None,
                    {"role": ev.pipe_role, "errors": errors},
                )
            )
    return out, presence


def _list(raw: str) -> list[Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


class AlertFeed:
    """Between Core's shell and the sink: committed batches in, alerts out; times offline accounts."""

    def __init__(self, sink: AlertSink, clock: Clock, config: AlertsConfig) -> None:
        self.sink = sink
        self.config = config
        self._clock = clock
        self._offline_since: dict[str, int] = {}
        """account -> when it went offline (not yet alerted)."""
        self._alerted: set[str] = set()
        """Accounts alerted as offline: their return is alerted too."""
        self._changed = trio.Event()
        self._store_failing = False
        self._refused: dict[str, tuple[str, m.ExecutionResult]] = {}
        """command_id -> (account, its failed execution result), applied and not yet committed."""

    def configure(self, config: AlertsConfig) -> None:
        self.config = config
        self.sink.configure(config)
        self._changed.set()

    def applied(self, msgs: list[tuple[str, m.AgentToCore]]) -> None:
        """Messages the engine just applied: an open the slave's broker refused is noted, and alerted
        once its result is committed (a repeated result, which the engine ignores, never is)."""
        for _, msg in msgs:
            if isinstance(msg, m.FromAccount) and isinstance(msg.message, m.ExecutionResult):
                res = msg.message
                if not res.success and res.error_code not in OMITTED_AT_SLAVE:
                    if len(self._refused) > 1000:  # rolled back, never committed: forgotten
                        self._refused.clear()
                    self._refused[res.command_id] = (msg.account_id, res)

    def committed(self, batch: Batch) -> None:
        """A batch is in the store: its alerts go to the sink."""
        if self._store_failing and batch:
            self._store_failing = False  # the store took a write again: a new failure is a new alert
        alerts: list[Alert] = []
        if self._refused:
            for cu in batch.command_updates:
                refused = self._refused.pop(cu.command_id, None) if cu.status == "failed" else None
                if refused is not None:
                    account, res = refused
                    why = res.error_code.value + (f" ({res.error_message})" if res.error_message else "")
                    details = {"error_code": res.error_code.value, "mt4_error": res.mt4_error}
                    text = f"the slave's broker refused the copy: {why}"
                    alerts.append(
                        Alert(
                            "missed_trade", "error", text, cu.completed_at_ms, account, res.trade_id, details
                        )
                    )
        if not (batch.decisions or batch.events or batch.evaluations or alerts):
            return
        found, presence = alerts_of(batch)
        alerts += found
        for a in alerts:
            self.sink.emit(a)
        for account, online, at_ms in presence:
            if not online:
                self._offline_since.setdefault(account, at_ms)
                self._changed.set()
                continue
            self._offline_since.pop(account, None)
            if account in self._alerted:
                self._alerted.discard(account)
                self.sink.emit(Alert("account_online", "info", "the account is back online", at_ms, account))

    def store_failing(self, why: str) -> None:
        """The journal could not record a batch (held or refused): copying has stopped until it can."""
        if self._store_failing:
            return
        self._store_failing = True
        self.sink.emit(
            Alert(
                "store_failing",
                "critical",
                f"the store could not record Core's journal ({why}); nothing is sent until it does",
                self._clock.now_ms(),
            )
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.sink.run)
            nursery.start_soon(self._offline_timer)
            task_status.started()

    async def _offline_timer(self) -> None:
        while True:
            limit_ms = int(self.config.offline_after_s * 1000)
            now = self._clock.now_ms()
            for account, since in sorted(self._offline_since.items(), key=lambda kv: kv[1]):
                if now - since >= limit_ms:
                    del self._offline_since[account]
                    self._alerted.add(account)
                    self.sink.emit(
                        Alert(
                            "account_offline",
                            "error",
                            f"the account has been offline for more than {self.config.offline_after_s:g} s",
                            now,
                            account,
                            None,
                            {"offline_since_ms": since},
                        )
                    )
            due = [since + limit_ms for since in self._offline_since.values()]
            self._changed = trio.Event()
            if due:
                with trio.move_on_after(max(0.0, (min(due) - now) / 1000.0)):
                    await self._changed.wait()
            else:
                await self._changed.wait()
