"""Core: dedupe by trade_id, copy relationships, symbol resolution, sizing, the ticket map, and the record of
every decision. The router (``router.py``) hands each trade's messages, in order, to one of a pool of
workers; a worker applies what it holds as one transaction, whose batch is written (before anything
leaves) together with whatever else was applied meanwhile (group commit), and then sends what it produced.

Per (trade, slave) a ``SlavePosition`` serialises the commands: a close or modify waits until the previous
command on that position has its result, because MT4 gives the remainder of a partial close a new ticket
that only the result tells us."""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import msgspec
import structlog
import trio
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from echo import __version__
from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.config import CoreConfig, RouterConfig
from echo.domain.copying import (
    Copy,
    SlaveQuote,
    SlaveView,
    canonical_symbol,
    modified_stops,
    plan_open,
    plan_partial_close,
    stops_too_close,
)
from echo.domain.errors import OMITTED_AT_SLAVE, ErrorCode
from echo.domain.ids import trade_comment, uuid7_time_ms
from echo.domain.policy import Policies, Policy
from echo.domain.registration import Evaluation, ProtocolPolicy, SymbolCatalog, evaluate
from echo.domain.types import Role, Side, SymbolSpec
from echo.pipe.jsonenc import to_json
from echo.ports.clock import Clock
from echo.ports.store import (
    AccountRow,
    Batch,
    CommandKind,
    CommandRow,
    CommandStatus,
    CommandUpdate,
    DecisionRow,
    EvaluationRow,
    EventRow,
    JournalRow,
    RetryEventRow,
    Store,
    StoreError,
    StoreUnavailable,
    SymbolEvaluationRow,
    TicketRow,
    TicketUpdate,
    TradeRow,
    TradeUpdate,
)
from echo.ports.transport import AgentUnavailable, CoreHub
from echo.services.core.router import Router
from echo.services.ids import IdFactory
from echo.services.timers import DueTimers

log = structlog.get_logger("echo.core")

_LIVE: weakref.WeakSet[Core] = weakref.WeakSet()
"""Cores running in this process (one, outside tests), read by the metrics callback."""


def _observe_stats(_options: CallbackOptions) -> Iterator[Observation]:
    totals: dict[str, int] = {}
    for core in list(_LIVE):
        for key, n in core.stats.items():
            totals[key] = totals.get(key, 0) + n
    for key, n in sorted(totals.items()):
        yield Observation(n, {"event": key, "component": "core"})


metrics.get_meter("echo.core").create_observable_counter(
    "echo_core_events_total",
    callbacks=[_observe_stats],
    description="What Core did, by event: copied, omitted, execute_sent, resends, router_busy and more",
)


_ROW_COLUMNS = frozenset({"command_id", "trade_id", "trace_id", "error_code"})
"""Message fields a command row keeps in its own columns: not repeated in its payload or result."""
_KEPT_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


_COMMAND_TYPES: dict[str, type[m.ExecuteOrder] | type[m.CloseOrder] | type[m.ModifyOrder]] = {
    "execute": m.ExecuteOrder,
    "close": m.CloseOrder,
    "modify": m.ModifyOrder,
}


def command_of(row: CommandRow) -> m.ExecuteOrder | m.CloseOrder | m.ModifyOrder:
    """A command as it was sent, from its row (the inverse of ``_compact``): the payload leaves out what
    the row's columns hold, the fields at their default and the trade's order comment."""
    known = {"command_id": row.command_id, "trade_id": row.trade_id, "trace_id": row.trace_id}
    data = {"comment": trade_comment(row.trade_id)} if row.kind == "execute" else {}
    return msgspec.convert(
        {**data, **msgspec.json.decode(row.payload), **known}, type=_COMMAND_TYPES[row.kind]
    )


def _compact(msg: Any, comment: str = "") -> str:
    """A command or a result as its command row keeps it: JSON without the fields the row's columns hold,
    without the fields at their default and without the trade's own order ``comment`` (``_recover`` puts
    them back)."""
    kept = _KEPT_FIELDS.get(type(msg))
    if kept is None:
        kept = _KEPT_FIELDS[type(msg)] = tuple(
            (f.name, f.default) for f in fields(msg) if f.name not in _ROW_COLUMNS
        )
    return to_json(
        {
            name: value
            for name, default in kept
            if (value := getattr(msg, name)) != (comment if name == "comment" else default)
        }
    )


@dataclass
class Account:
    account_id: str
    role: Role
    agent_id: str
    online: bool
    handshake: m.Handshake
    symbols: dict[str, SymbolSpec] = field(default_factory=dict)
    quotes: dict[str, SlaveQuote] = field(default_factory=dict)
    """broker symbol -> latest quote, stamped with Core's receive time."""
    snapshot: m.StateSnapshot | None = None
    tick_values: dict[str, float] = field(default_factory=dict)
    """broker symbol -> money per tick per lot, from the latest state snapshot that reported it."""
    tick_values_at_ms: int | None = None
    broker_closes_handled: set[int] = field(default_factory=set)
    stops_waiting: set[str] = field(default_factory=set)
    """Trades whose stops this broker refused after the fill: tried again once a quote allows them."""
    registration: m.RegistrationStatus = m.RegistrationStatus.ACCEPTED
    """Core's verdict on the last handshake: REJECTED blocks every command to the account."""
    rejected_symbols: dict[str, str] = field(default_factory=dict)
    """canonical -> why this account may not trade it."""
    reported_at_ms: int = 0
    """When the Agent received the handshake this state comes from (an older report is ignored)."""
    """Tickets of ``recent_closes`` already applied (the snapshot repeats them for 24 hours)."""


@dataclass
class Op:
    kind: CommandKind
    fraction: float = 1.0
    """close: share of the position to close (1.0 = all)."""
    stop_loss: float | None = None
    take_profit: float | None = None
    event_id: str | None = None
    exact: bool = False
    """modify: the prices are the slave's already (stops set after the fill), not the master's."""


@dataclass
class SlavePosition:
    account_id: str
    broker_symbol: str
    spec: SymbolSpec | None
    """None after a restart until the slave's handshake says what its broker's symbol looks like."""
    tickets: dict[int, float] = field(default_factory=dict)
    """open slave tickets -> lots."""
    in_flight: set[str] = field(default_factory=set)
    queue: deque[Op] = field(default_factory=deque)
    opened: bool = False
    failed: bool = False
    after_fill: tuple[float | None, float | None] | None = None
    """Stops the broker's StopLevel kept off the order: set by a modify once it fills."""
    after_fill_command: str | None = None
    """The modify that sets ``after_fill`` stops, while it is out."""
    closed_by_broker: str | None = None
    """SL, TP or STOP_OUT: the slave's broker closed the position on its own; it is never reopened."""
    entry_price: float | None = None
    """The slave's fill price (the master's entry stands in after a restart): a catastrophic SL is set
    from it when a master modification leaves no SL."""


@dataclass
class Trade:
    row: TradeRow
    intent: m.TradeIntent
    canonical: str
    positions: dict[str, SlavePosition] = field(default_factory=dict)
    events_seen: set[str] = field(default_factory=set)
    closed: bool = False
    comment: str = ""
    """The order comment stamped on every slave order of this trade (carries the trade_id)."""
    done_commands: set[str] = field(default_factory=set)
    """Commands of this trade already answered: a repeated answer is expected, not an anomaly. Forgotten
    with the trade (a result for a trade that is gone and still known for dedupe is a repeat too)."""


@dataclass
class Pending:
    command: m.Command
    kind: CommandKind
    account_id: str
    trade_id: str
    state: delivery.Command = field(default_factory=delivery.Command)


class _Tx:
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


def _merge(group: list[_Tx]) -> Batch:
    """The batches of several transactions as one write, in the order they were applied."""
    if len(group) == 1:
        return group[0].batch
    merged = Batch()
    for f in fields(Batch):
        rows: list[Any] = getattr(merged, f.name)
        for tx in group:
            rows.extend(getattr(tx.batch, f.name))
    return merged


_TRADE_COLUMNS = frozenset({"canonical", "master_price", "master_stop_loss", "master_take_profit"})
"""What a copy's sizing and stops detail repeats from the trade row: not kept in its receipt."""


def _copy_detail(plan: Copy) -> dict[str, Any]:
    """The receipt's detail of a copy: how its size, symbol and stops were chosen. The command (and its id)
    is the trade's execute row for the account; the stops went with the order as ``stops`` unless
    ``after_fill`` holds them for a modify once it fills."""
    detail: dict[str, Any] = {k: v for k, v in plan.detail.items() if k not in _TRADE_COLUMNS}
    stops = detail.get("stops")
    if isinstance(stops, dict):
        detail["stops"] = {k: v for k, v in stops.items() if k not in _TRADE_COLUMNS}
    detail["broker_symbol"] = plan.broker_symbol
    if plan.after_fill:
        detail["after_fill"] = list(plan.after_fill)
    return detail


class Core:
    def __init__(
        self,
        hub: CoreHub,
        store: Store,
        clock: Clock,
        config: CoreConfig,
        *,
        delivery_settings: delivery.Settings | None = None,
        ids: IdFactory | None = None,
        policies: Policies | None = None,
        protocol: ProtocolPolicy | None = None,
        catalog: SymbolCatalog | None = None,
        router: RouterConfig | None = None,
        retention_days: int = 90,
    ) -> None:
        self._hub = hub
        self.retention_ms = retention_days * 86_400_000
        """Closed trades are purged from the store this long after they closed (``store.retention_days``)."""
        self.delivery = delivery_settings or delivery.Settings()
        self._timers = DueTimers(clock)
        """When the reconciler looks at a command again."""
        self._journal: list[_Tx] = []
        """Transactions applied and not yet written, in the order they were applied."""
        self._writing = False
        self._wrote = trio.Event()
        self._held = trio.Event()
        """Set when a batch is held (the store unavailable): ``_rewrite_held`` takes over."""
        self._unsure = False
        """A write failed as unavailable since the last one that succeeded: it may have committed."""
        self.router = Router(
            router or RouterConfig(),
            apply=self.apply,
            finish=self._finish,
            reject_busy=self.reject_busy,
            trade_of_command=self.trade_of_command,
        )
        self._send_timeout_s = self.router.config.worker_timeout_ms / 1000.0
        _LIVE.add(self)
        self._store = store
        self._clock = clock
        self.config = config
        self.policies = policies or Policies(Policy(fixed_lot=config.fixed_lot, copy_sl_tp=config.copy_sl_tp))
        self.protocol = protocol or ProtocolPolicy()
        self.catalog = catalog or SymbolCatalog()
        self._ids = ids or IdFactory(clock)
        self.accounts: dict[str, Account] = {}
        self.trades: dict[str, Trade] = {}
        self._seen_trade_ids: set[str] = set()
        """Trades handled within the dedupe window (pruned by ``_prune``)."""
        self._pending: dict[str, Pending] = {}
        self._pruned_at_ms = 0
        self._given_up: dict[str, Pending] = {}
        """Commands that got no result after every send: a late result is still applied."""
        self.stats: dict[str, int] = {}
        self._changed = trio.Event()

    # ------------------------------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        horizon = self._clock.now_ms() - self.config.dedupe_window_ms
        for row in await self._store.trades(limit=1_000_000):
            if uuid7_time_ms(row.trade_id) >= horizon:
                self._seen_trade_ids.add(row.trade_id)
        self._pruned_at_ms = self._clock.now_ms()
        for a in await self._store.accounts():
            hs = msgspec.json.decode(a.handshake, type=m.Handshake)
            ev = self._evaluate(hs, a.agent_id)
            self.accounts[a.account_id] = Account(
                a.account_id,
                hs.role,
                a.agent_id,
                False,
                hs,
                ev.symbols,
                registration=ev.status,
                rejected_symbols=ev.rejected_symbols,
                reported_at_ms=a.updated_at_ms,
            )
        recovered = await self._recover()
        log.info(
            "core_started",
            known_trades=len(self._seen_trade_ids),
            fixed_lot=self.config.fixed_lot,
            recovered_trades=recovered,
            pending_commands=len(self._pending),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconciler)
            nursery.start_soon(self._rewrite_held)
            nursery.start_soon(self._retention)
            await nursery.start(self.router.run, self._hub)
            task_status.started()

    _MASTER_EVENTS = frozenset({"master_close", "master_partial_close", "master_modify"})

    async def _recover(self) -> int:
        """Rebuild, from the store, what a restart must not forget: every trade that is open at the master
        or still has unanswered commands, its slave positions and tickets, the master events already
        handled (for dedupe), and each pending command with its delivery state and retry time. Closed
        trades whose slave tickets are still open get a close queued."""
        pending = await self._store.journal("PENDING")
        trade_ids = {t.trade_id for t in await self._store.trades(status="open", limit=1_000_000)}
        trade_ids |= {j.trade_id for j in pending}
        # closed at the master, a slave's ticket still open (its close waited, e.g. for the slave's spec)
        trade_ids |= set(await self._store.trades_with_open_tickets())
        by_trade: dict[str, list[JournalRow]] = {}
        for j in pending:
            by_trade.setdefault(j.trade_id, []).append(j)
        now = self._clock.now_ms()
        for trade_id in sorted(trade_ids):
            row = await self._store.get_trade(trade_id)
            if row is None:
                log.error("core_recover_missing_trade", trade_id=trade_id)
                continue
            intent = m.TradeIntent(
                row.trade_id,
                row.trace_id,
                row.master_symbol,
                Side(row.side),
                row.lot_size,
                row.price,
                row.magic_number,
                row.master_ticket,
                row.stop_loss,
                row.take_profit,
                opened_at_ms=row.opened_at_ms,
            )
            trade = Trade(
                row,
                intent,
                row.symbol,
                comment=trade_comment(row.trade_id),
                closed=row.status == "closed",
            )
            for d in await self._store.decisions(trade_id):
                if d.decision == "copy":
                    detail = msgspec.json.decode(d.detail)
                    after_fill = detail.get("after_fill")
                    trade.positions[d.account_id] = SlavePosition(
                        d.account_id,
                        str(detail.get("broker_symbol", "")),
                        None,
                        after_fill=(after_fill[0], after_fill[1]) if isinstance(after_fill, list) else None,
                    )
            for t in await self._store.tickets(trade_id):
                pos = trade.positions.get(t.account_id)
                if pos is not None:
                    pos.opened = True
                    pos.after_fill = None  # set in the commit that recorded the fill
                    if t.status == "open":
                        pos.tickets[t.ticket] = t.lots
            master_ops: list[Op] = []
            applied: dict[str, set[str]] = {}
            for e in await self._store.events(trade_id, limit=1_000_000):
                if e.kind in self._MASTER_EVENTS:
                    data = msgspec.json.decode(e.data)
                    event_id = data.get("event_id")
                    if isinstance(event_id, str):
                        trade.events_seen.add(event_id)
                        op = self._op_from_event(e.kind, data, event_id)
                        if op is not None:
                            master_ops.append(op)
                elif e.kind == "op_applied" and e.account_id is not None:
                    event_id = msgspec.json.decode(e.data).get("event_id")
                    if isinstance(event_id, str):
                        applied.setdefault(e.account_id, set()).add(event_id)
            # A master close/modify that was acknowledged but not yet applied to a slave (it waited behind
            # a command in flight) is queued again, in the master's order.
            for pos in trade.positions.values():
                done = applied.get(pos.account_id, set())
                pos.queue.extend(op for op in master_ops if op.event_id not in done)
            commands = {c.command_id: c for c in await self._store.commands(trade_id)}
            for j in by_trade.get(trade_id, []):
                c = commands.get(j.command_id)
                pos = trade.positions.get(j.account_id)
                if c is None or pos is None:
                    log.error("core_recover_orphan_command", command_id=j.command_id, trade_id=trade_id)
                    continue
                cmd = command_of(c)
                state = delivery.Command(
                    delivery.Stage[j.stage],
                    delivery.Outcome.PENDING,
                    j.attempt,
                    j.next_retry_at_ms,
                    j.last_error,
                )
                self._pending[j.command_id] = Pending(cmd, c.kind, j.account_id, trade_id, state)
                pos.in_flight.add(j.command_id)
                self._timers.at(j.next_retry_at_ms or now, j.command_id)
            if trade.closed:
                for pos in trade.positions.values():
                    full_close_queued = any(op.kind == "close" and op.fraction >= 1.0 for op in pos.queue)
                    if (pos.tickets or pos.in_flight) and not full_close_queued:
                        # an open still in flight is closed once it fills
                        pos.queue.append(Op("close"))
            self.trades[trade_id] = trade
        return len(trade_ids)

    def _op_from_event(self, kind: str, data: dict[str, Any], event_id: str) -> Op | None:
        """The slave operation a recorded master event asks for (see ``_on_close`` / ``_on_modify``)."""
        if kind == "master_modify":
            if not data.get("mirrored", False):
                return None
            sl, tp = data.get("stop_loss"), data.get("take_profit")
            return Op(
                "modify",
                stop_loss=float(sl) if isinstance(sl, int | float) else None,
                take_profit=float(tp) if isinstance(tp, int | float) else None,
                event_id=event_id,
            )
        fraction = data.get("fraction", 1.0) if kind == "master_partial_close" else 1.0
        return Op("close", fraction=float(fraction), event_id=event_id)

    async def handle(self, agent_id: str, msg: m.AgentToCore) -> None:
        await self.handle_many([(agent_id, msg)])

    async def handle_many(self, msgs: list[tuple[str, m.AgentToCore]]) -> None:
        """Handle messages from Agents as one group, bypassing the router (tests drive Core this way)."""
        await self._finish(self.apply(msgs))

    def apply(self, msgs: list[tuple[str, m.AgentToCore]]) -> _Tx:
        """Change the state for a group of messages and queue the transaction for the journal. Bad input
        is logged and dropped; nothing here raises, and nothing here awaits (the change is atomic)."""
        tx = _Tx()
        for agent_id, msg in msgs:
            try:
                self._dispatch(agent_id, msg, tx)
            except Exception:
                log.exception("core_message_failed", agent_id=agent_id, message=type(msg).__name__)
        self._enqueue(tx)
        return tx

    def reject_busy(self, agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> _Tx:
        """A master event the router had no room for: recorded, and the master told to send it again."""
        tx = _Tx()
        assert isinstance(msg, m.FromAccount)
        inner = msg.message
        assert isinstance(inner, m.TradeIntent | m.TradeClose | m.TradeModify)
        event_id = getattr(inner, "event_id", None)
        self._count("router_busy")
        self._event(
            tx,
            "router_busy",
            trade_id=inner.trade_id,
            account_id=msg.account_id,
            trace_id=inner.trace_id,
            agent_id=agent_id,
            message=type(inner).__name__,
            event_id=event_id,
            worker_id=worker_id,
            queue_depth=depth,
        )
        self._ack(
            tx,
            msg.account_id,
            inner.trade_id,
            inner.trace_id,
            m.AckStatus.RETRY,
            event_id,
            f"core is busy (router worker {worker_id} holds {depth} events); send it again",
            ErrorCode.ERR_BROKER_BUSY,
        )
        self._enqueue(tx)
        return tx

    def trade_of_command(self, command_id: str) -> str | None:
        pend = self._pending.get(command_id) or self._given_up.get(command_id)
        return pend.trade_id if pend is not None else None

    async def _reconciler(self) -> None:
        """Re-sends commands whose result did not come back in time (same command_id), and gives up after
        ``max_retries`` sends; the rules are the delivery machine's, this task only keeps the clock."""
        while True:
            _, due = await self._timers.next_due()
            tx = _Tx()
            for command_id in due:
                pend = self._pending.get(command_id)
                if pend is not None:
                    self._drive(pend, delivery.Timeout(), tx)
            self._enqueue(tx)
            await self._finish(tx)

    EVALUATION_RETENTION_MS = 30 * 86_400_000
    """Handshake evaluations are kept this long (RFC-005a: 30 days)."""
    RETENTION_EVERY_S = 3600.0
    PURGE_BATCH = 20
    """Closed trades purged per store transaction: a batch of 15-slave trades takes a few ms on SQLite, so
    copying never waits long behind it."""
    PURGE_PAUSE_S = 0.05
    """Between two purge batches: the workers' commits go first."""

    async def _retention(self) -> None:
        """Purges handshake evaluations and closed trades past their retention, at start and then hourly.
        A closed trade is kept at least ``core.dedupe_window_ms`` (a restart reads its id from the store)."""
        while True:
            before = self._clock.now_ms() - self.EVALUATION_RETENTION_MS
            try:
                gone = await self._store.purge_evaluations(before)
            except StoreError as exc:
                log.warning("core_retention_failed", error=str(exc))
            else:
                if gone:
                    log.info("core_retention_purged", evaluations=gone, before_ms=before)
            await self._purge_trades()
            await trio.sleep(self.RETENTION_EVERY_S)

    async def _purge_trades(self) -> int:
        """Closed trades older than the retention leave the store, a small batch at a time."""
        before = self._clock.now_ms() - max(self.retention_ms, self.config.dedupe_window_ms)
        purged = 0
        while True:
            try:
                n = await self._store.purge_closed_trades(before, self.PURGE_BATCH)
            except StoreError as exc:
                log.warning("core_retention_failed", error=str(exc), purged_trades=purged)
                return purged
            purged += n
            if n < self.PURGE_BATCH:
                break
            await trio.sleep(self.PURGE_PAUSE_S)
        if purged:
            log.info("core_retention_purged", trades=purged, closed_before_ms=before)
        return purged

    def _enqueue(self, tx: _Tx) -> None:
        """Queue an applied transaction for the journal; the journal writes in this order."""
        if tx.batch:
            self._journal.append(tx)
        else:
            tx.done = True

    async def _finish(self, tx: _Tx) -> None:
        """Wait until the batch is recorded, then send (never the other way round), then wake whoever waits
        for a change. Whoever finds the journal idle writes everything queued as one batch (group commit
        across workers)."""
        while not tx.done:
            if self._writing:
                await self._wrote.wait()
                continue
            await self._write_journal()
        if tx.held:
            # Not recorded yet: nothing leaves but the masters' RETRY; the rest goes once it is written.
            self._count("store_failures")
            for out in tx.retries:
                await self._to_account(out)
            self._changed.set()
            self._changed = trio.Event()
            return
        if not tx.ok:
            # Never send what was not recorded. The masters are told to retry their messages.
            self._count("store_failures")
            self._rollback(tx)
        await self._deliver(tx)

    async def _deliver(self, tx: _Tx) -> None:
        """Send what a recorded (or rolled back) transaction produced; wake whoever waits for a change."""
        failed: list[tuple[str, m.AgentToCore]] = []
        for out in tx.sends:
            await self._send(out, failed)
        for drop in tx.drops:
            await self._send(drop, failed)
        for former, release in tx.released:
            # a former Agent that is gone lets the command go after agent.ledger_hold_ms anyway
            await self._to_agent(former, release)
        for agent_id, out in tx.direct:
            await self._to_agent(agent_id, out)
        self._changed.set()
        self._changed = trio.Event()
        if failed:
            await self._finish(self.apply(failed))

    async def _to_account(self, out: m.ToAccount) -> None:
        failed: list[tuple[str, m.AgentToCore]] = []
        await self._send(out, failed)

    async def _write_journal(self) -> None:
        """Write everything queued as one batch. The store unavailable (disk full, server down): the batch
        is held, first in the journal, and written again before anything applied after it, once the store
        is back (``_rewrite_held`` tries while nothing else does); what Core applied stays applied, so the
        store ends as if it had never been away. The batch refused for what it holds: it is rolled back,
        with everything applied after it (which may build on it)."""
        self._writing = True
        group, self._journal = self._journal, []
        landed: list[_Tx] = []
        try:
            outcome = await self._write_with_retries(_merge(group))
            if outcome == "rejected" and self._unsure:
                landed = await self._landed(group)
                if landed:
                    log.warning("core_journal_landed_before", transactions=len(landed))
                    group = group[len(landed) :]
                    outcome = await self._write_with_retries(_merge(group)) if group else "written"
        except BaseException:
            self._journal[:0] = group
            raise
        finally:
            self._writing = False
        for t in landed:
            t.done, t.ok = True, True
        # held before (their workers moved on) or found in the store: this writer finishes them
        late = [t for t in landed if t.held] + [t for t in group if t.held]
        if outcome == "unavailable":
            self._journal[:0] = group
            late = []
            for t in group:
                if not t.held:
                    t.held, t.done, t.retries = True, True, self._retry_acks(t)
            log.warning("core_journal_held", transactions=len(self._journal))
            self._held.set()
        elif outcome == "rejected":
            # What was applied after a refused batch may build on it: refused too.
            group, self._journal = group + self._journal, []
            for t in group:
                t.done, t.ok = True, False
        else:
            for t in group:
                t.done, t.ok = True, True
            if late:
                log.info("core_journal_written_after_outage", transactions=len(late))
        self._wrote.set()
        self._wrote = trio.Event()
        for t in late:
            t.held = False
            if not t.ok:
                self._rollback(t)
                t.sends = []  # its masters were told to retry when it was held
            else:
                t.sends = [out for out in t.sends if not self._stale(out)]
            await self._deliver(t)

    def _stale(self, out: m.ToAccount) -> bool:
        """Not worth sending once a held transaction is written: an acknowledgement its masters got as RETRY,
        or a command answered since, or sent again since (a later send carries the later attempt)."""
        msg = out.message
        if isinstance(msg, m.TradeIntentAck):
            return True
        if isinstance(msg, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder):
            pend = self._pending.get(msg.command_id)
            return pend is None or pend.state.attempt > msg.attempt
        return False

    async def _landed(self, group: list[_Tx]) -> list[_Tx]:
        """The leading transactions of ``group`` already in the store: a write that failed as unavailable
        may have committed all the same (the server committed, its answer was lost), and writing it again
        is then refused for keys that exist. Told by looking up one row each inserts; a transaction that
        inserts nothing is counted with those before it (its updates may be applied again in order)."""
        landed = 0
        for i, t in enumerate(group):
            found = await self._in_store(t.batch)
            if found is False:
                break
            if found:
                landed = i + 1
        return group[:landed]

    async def _in_store(self, b: Batch) -> bool | None:
        """Whether the batch's first inserted row is in the store; None when it inserts nothing to tell by."""
        try:
            if b.trades:
                return await self._store.get_trade(b.trades[0].trade_id) is not None
            if b.commands:
                c = b.commands[0]
                return any(r.command_id == c.command_id for r in await self._store.commands(c.trade_id))
            if b.tickets:
                k = b.tickets[0]
                rows = await self._store.tickets(k.trade_id)
                return any((r.account_id, r.ticket) == (k.account_id, k.ticket) for r in rows)
            for e in b.events:
                if e.trade_id is not None:
                    rows_e = await self._store.events(e.trade_id, limit=1_000_000)
                    return any(r.event_id == e.event_id for r in rows_e)
        except StoreError as exc:
            log.warning("core_journal_lookup_failed", error=str(exc))
            return False
        return None

    HELD_RETRY_S = 1.0
    """While a batch is held and no other write comes, the journal is tried again this often."""

    async def _rewrite_held(self) -> None:
        """Writes a held journal once the store is back, even when no message arrives to do it."""
        while True:
            await self._held.wait()
            while self._journal and self._journal[0].held:
                if self._writing:
                    await self._wrote.wait()
                    continue
                await trio.sleep(self.HELD_RETRY_S)
                if self._journal and self._journal[0].held and not self._writing:
                    await self._write_journal()
            self._held = trio.Event()

    JOURNAL_BACKOFF_S = (0.02, 0.1, 0.5)
    """Waits between attempts to write a batch. Everything else waits meanwhile: the fan-out stops rather
    than send what is not journaled."""

    async def _write_with_retries(self, batch: Batch) -> Literal["written", "unavailable", "rejected"]:
        for attempt, wait in enumerate((*self.JOURNAL_BACKOFF_S, None), start=1):
            try:
                await self._store.write(batch)
                self._unsure = False
                return "written"
            except StoreError as exc:
                if isinstance(exc, StoreUnavailable):
                    self._unsure = True
                if wait is None:
                    log.error(
                        "core_delivery_failed", error=str(exc), commands=len(batch.commands), attempts=attempt
                    )
                    return "unavailable" if isinstance(exc, StoreUnavailable) else "rejected"
                log.warning("core_journal_retry", error=str(exc), attempt=attempt, wait_s=wait)
                self._count("journal_retries")
                await trio.sleep(wait)
        return "rejected"  # pragma: no cover - the loop returns

    async def set_delivery(self, settings: delivery.Settings, heartbeat_interval_ms: int) -> None:
        """New delivery settings, applied without a restart: the next timers use them, and every Agent
        (hence every terminal) is told."""
        old, self.delivery = self.delivery, settings
        log.info("core_delivery_settings", old=str(old), new=str(settings))
        beat = m.DeliveryHeartbeat(
            m.DeliveryConfig(
                settings.ack_timeout_ms,
                settings.retry_backoff_ms,
                settings.max_retries,
                heartbeat_interval_ms,
            )
        )
        for agent_id in sorted({a.agent_id for a in self.accounts.values() if a.online}):
            problem = await self._to_agent(agent_id, beat)
            if problem is not None:
                log.warning("core_agent_unavailable", agent_id=agent_id, error=problem)

    async def set_rules(
        self, config: CoreConfig, policies: Policies, protocol: ProtocolPolicy, catalog: SymbolCatalog
    ) -> None:
        """New follow rules, copy policies, protocol policy and symbol catalog, applied without a restart:
        every account is evaluated again from its last handshake; online terminals get the new verdict;
        accounts that became acceptable get what was held for them. The next trade uses the new rules."""
        self.config, self.policies, self.protocol, self.catalog = config, policies, protocol, catalog
        log.info("core_rules_changed", accounts=len(self.accounts))
        tx = _Tx()
        for acc in list(self.accounts.values()):
            self.reevaluate(acc, tx)
        self._enqueue(tx)
        await self._finish(tx)

    def reevaluate(self, acc: Account, tx: _Tx) -> None:
        ev = self._evaluate(acc.handshake, acc.agent_id)
        before = acc.registration
        acc.symbols, acc.registration, acc.rejected_symbols = ev.symbols, ev.status, ev.rejected_symbols
        if acc.online:
            self._send_evaluation(acc, ev, tx)
        if before is m.RegistrationStatus.REJECTED and ev.status is not m.RegistrationStatus.REJECTED:
            for trade in self.trades.values():
                pos = trade.positions.get(acc.account_id)
                if pos is not None:
                    self._pump(trade, pos, tx)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (without polling) until ``predicate()`` holds after some message was handled."""
        while not predicate():
            await self._changed.wait()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def recorded(self) -> bool:
        """Everything applied is in the store: nothing queued, held or being written."""
        return not self._journal and not self._writing

    @property
    def remembered(self) -> tuple[int, int]:
        """(trade ids held for dedupe, trades held whole): the first is bounded by the dedupe window, the
        second by the trades still open or with slave work left (closed trades are forgotten)."""
        return len(self._seen_trade_ids), len(self.trades)

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    async def _to_agent(self, agent_id: str, msg: m.CoreToAgent) -> str | None:
        """Hand a message to an Agent, waiting at most ``router.worker_timeout_ms``; why not, or None."""
        try:
            with trio.fail_after(self._send_timeout_s):
                await self._hub.send(agent_id, msg)
        except AgentUnavailable as exc:
            return str(exc) or "agent unavailable"
        except trio.TooSlowError:
            return "agent too slow"
        return None

    async def _send(self, out: m.ToAccount | m.DropCommand, failed: list[tuple[str, m.AgentToCore]]) -> None:
        """Send to the Agent that owns the account (never to the others). An Agent that is gone, or that
        takes no message within ``router.worker_timeout_ms``, fails the command at the Agent's hop (the
        delivery machine sends it again later) instead of holding up every other account."""
        acc = self.accounts.get(out.account_id)
        if acc is None:
            log.error("core_send_unknown_account", account_id=out.account_id)
            return
        problem = await self._to_agent(acc.agent_id, out)
        if problem is not None:
            log.warning(
                "core_agent_unavailable", account_id=out.account_id, agent_id=acc.agent_id, error=problem
            )
            reason = "agent too slow" if problem == "agent too slow" else "agent unavailable"
            if isinstance(out, m.ToAccount) and isinstance(
                out.message, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder
            ):
                failed.append(
                    (
                        acc.agent_id,
                        m.CommandAck(
                            out.account_id,
                            out.message.command_id,
                            m.AckStage.AGENT_BUFFERED,
                            m.AckResult.FAILED,
                            reason,
                        ),
                    )
                )

    def _rollback(self, tx: _Tx) -> None:
        """Undo what the unrecorded batch did to master-side state, so the masters' retries are handled as
        new: intents are forgotten, close/modify events unseen (their queued operations dropped), and the
        commands they produced are not pending. Results from slaves stay applied in memory (the terminal
        will not send them again); their rows are missing from the store."""
        closed_now = {u.trade_id for u in tx.batch.trade_updates if u.status == "closed"}
        for out in tx.sends:
            ack = out.message
            if not isinstance(ack, m.TradeIntentAck) or ack.event_id is None:
                continue
            trade = self.trades.get(ack.trade_id)
            if trade is None:
                continue
            trade.events_seen.discard(ack.event_id)
            for position in trade.positions.values():
                position.queue = deque(op for op in position.queue if op.event_id != ack.event_id)
            if ack.trade_id in closed_now:
                trade.closed = False
        for row in tx.batch.commands:
            pend = self._pending.pop(row.command_id, None)
            if pend is None:
                continue
            owner = self.trades.get(pend.trade_id)
            pos = owner.positions.get(pend.account_id) if owner else None
            if pos is not None:
                pos.in_flight.discard(row.command_id)
        for trade_row in tx.batch.trades:
            self.trades.pop(trade_row.trade_id, None)
            self._seen_trade_ids.discard(trade_row.trade_id)
        tx.sends = self._retry_acks(tx)
        tx.drops = []

    @staticmethod
    def _retry_acks(tx: _Tx) -> list[m.ToAccount]:
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

    def _event(
        self,
        tx: _Tx,
        kind: str,
        *,
        trade_id: str | None = None,
        account_id: str | None = None,
        command_id: str | None = None,
        trace_id: str | None = None,
        **data: Any,
    ) -> None:
        tx.batch.events.append(
            EventRow(
                self._ids.uuid7(),
                self._clock.now_ms(),
                kind,
                trade_id,
                account_id,
                command_id,
                trace_id,
                to_json(data),
            )
        )

    def _dispatch(self, agent_id: str, msg: m.AgentToCore, tx: _Tx) -> None:
        if isinstance(msg, m.FromAccount):
            acc = self.accounts.get(msg.account_id)
            inner = msg.message
            if acc is None:
                log.warning("core_message_from_unknown_account", account_id=msg.account_id)
                if isinstance(inner, m.TradeIntent | m.TradeClose | m.TradeModify):
                    # refused, never stored: an account whose handshake was refused (RETRY: one Core has
                    # not heard of yet may still be accepted)
                    allowed = self.config.allows(msg.account_id, Role.MASTER)
                    self._count("events_from_unknown_accounts")
                    tx.direct.append(
                        (
                            agent_id,
                            m.ToAccount(
                                msg.account_id,
                                m.TradeIntentAck(
                                    inner.trade_id,
                                    inner.trace_id,
                                    m.AckStatus.RETRY if allowed else m.AckStatus.REJECTED,
                                    getattr(inner, "event_id", None),
                                    message=f"account {msg.account_id} is not known to Core"
                                    + ("" if allowed else ": it is not a master in core.follow"),
                                ),
                            ),
                        )
                    )
                return
            if isinstance(inner, m.TradeIntent) and not self.config.allows(acc.account_id, Role.MASTER):
                self._count("intents_from_unlisted_masters")
                log.error(
                    "core_intent_refused",
                    account_id=acc.account_id,
                    trade_id=inner.trade_id,
                    reason="not a master in core.follow",
                )
                self._ack(
                    tx,
                    acc.account_id,
                    inner.trade_id,
                    inner.trace_id,
                    m.AckStatus.REJECTED,
                    None,
                    f"account {acc.account_id} is not a master in core.follow: its trades are not copied",
                )
            elif (
                isinstance(inner, m.TradeIntent | m.TradeClose | m.TradeModify)
                and acc.registration is m.RegistrationStatus.REJECTED
            ):
                # The master keeps the event and sends it again once a handshake or re-evaluation accepts it.
                log.warning(
                    "core_event_from_rejected_account", account_id=acc.account_id, trade_id=inner.trade_id
                )
                self._ack(
                    tx,
                    acc.account_id,
                    inner.trade_id,
                    inner.trace_id,
                    m.AckStatus.RETRY,
                    getattr(inner, "event_id", None),
                    "this account's handshake was REJECTED (see symbol_registration_result)",
                )
            elif isinstance(inner, m.TradeIntent):
                self._on_intent(acc, inner, msg.received_ms, tx)
            elif isinstance(inner, m.TradeClose):
                self._on_close(acc, inner, tx)
            elif isinstance(inner, m.TradeModify):
                self._on_modify(acc, inner, tx)
            elif isinstance(inner, m.ExecutionResult | m.CloseResult | m.ModifyResult):
                self._on_result(acc, inner, tx)
            elif isinstance(inner, m.Quotes):
                for q in inner.quotes:
                    acc.quotes[q.symbol] = SlaveQuote(q.bid, q.ask, msg.received_ms)
                if acc.stops_waiting:
                    self._retry_stops(acc, tx)
            elif isinstance(inner, m.StateSnapshot):
                acc.snapshot = inner
                for tv in inner.tick_values:
                    if tv.tick_value > 0:
                        acc.tick_values[tv.symbol] = tv.tick_value
                if inner.tick_values:
                    acc.tick_values_at_ms = msg.received_ms
                if acc.role is Role.SLAVE and (inner.recent_closes or acc.broker_closes_handled):
                    self._on_broker_closes(acc, inner.recent_closes, tx)
        elif isinstance(msg, m.AccountOnline):
            self._on_online(agent_id, msg, tx)
        elif isinstance(msg, m.AccountOffline):
            acc = self.accounts.get(msg.account_id)
            if acc is not None and acc.agent_id == msg.agent_id:
                acc.online = False
                self._event(tx, "account_offline", account_id=msg.account_id, agent_id=msg.agent_id)
                log.info("core_account_offline", account_id=msg.account_id, agent_id=msg.agent_id)
        elif isinstance(msg, m.CommandAck):
            self._on_command_ack(agent_id, msg, tx)

    # --------------------------------------------------------------------------------------- accounts

    def _on_online(self, agent_id: str, msg: m.AccountOnline, tx: _Tx) -> None:
        hs = msg.handshake
        prev = self.accounts.get(hs.account_id)
        if prev is not None and msg.at_ms < prev.reported_at_ms:
            # a report older than the one in force (reordered across reconnects): hard-replace only forward
            self._count("stale_handshakes")
            log.warning(
                "core_handshake_stale",
                account_id=hs.account_id,
                reported_at_ms=msg.at_ms,
                in_force_since_ms=prev.reported_at_ms,
            )
            return
        ev = self._evaluate(hs, agent_id)
        if prev is None and not self.config.allows(hs.account_id, hs.role):
            # An account the configuration does not list: refused, and nothing of it is kept (no accounts
            # row, no evaluation rows, no state), so invented ids cost nothing.
            self._count("handshakes_not_configured")
            log.error(
                "core_handshake_refused",
                account_id=hs.account_id,
                role=hs.role.value,
                agent_id=agent_id,
                reason="not in core.follow",
                evaluation_id=ev.result.evaluation_id,
            )
            tx.direct.append((agent_id, m.ToAccount(hs.account_id, ev.result)))
            return
        acc = Account(
            hs.account_id,
            hs.role,
            agent_id,
            True,
            hs,
            ev.symbols,
            registration=ev.status,
            rejected_symbols=ev.rejected_symbols,
            reported_at_ms=msg.at_ms,
        )
        if prev is not None:
            acc.quotes, acc.snapshot = prev.quotes, prev.snapshot
            acc.tick_values, acc.tick_values_at_ms = prev.tick_values, prev.tick_values_at_ms
        self.accounts[hs.account_id] = acc
        tx.batch.accounts.append(AccountRow(hs.account_id, hs.role.value, agent_id, to_json(hs), msg.at_ms))
        if prev is not None and prev.agent_id != agent_id:
            # The terminal now runs beside another Agent: from here on only that Agent gets its messages,
            # and the old Agent's going offline no longer touches it.
            log.info(
                "core_account_moved", account_id=hs.account_id, from_agent=prev.agent_id, to_agent=agent_id
            )
            self._event(
                tx, "account_moved", account_id=hs.account_id, from_agent=prev.agent_id, to_agent=agent_id
            )
            reason = f"account {hs.account_id} moved to agent {agent_id}"
            for pend in self._pending.values():
                if pend.account_id == hs.account_id:
                    tx.released.append(
                        (prev.agent_id, m.DropCommand(hs.account_id, pend.command.command_id, reason))
                    )
        log.info(
            "core_account_online",
            account_id=hs.account_id,
            role=hs.role.value,
            agent_id=agent_id,
            symbols=len(hs.symbols),
            canonical=sorted(ev.symbols),
            protocol_version=hs.protocol_version,
            client_semver=hs.client_semver,
            registration=ev.status.value,
        )
        self._event(
            tx,
            "account_online",
            account_id=hs.account_id,
            agent_id=agent_id,
            role=hs.role.value,
            symbols={c: s.broker_symbol for c, s in ev.symbols.items()},
            rejected_symbols=ev.rejected_symbols,
            protocol_version=hs.protocol_version,
            client_semver=hs.client_semver,
            registration=ev.status.value,
            evaluation_id=ev.result.evaluation_id,
        )
        self._send_evaluation(acc, ev, tx)
        if acc.registration is m.RegistrationStatus.REJECTED:
            return  # nothing goes to this account until a handshake or a re-evaluation accepts it
        if hs.role is Role.SLAVE:
            # Commands it has not answered go out again now, with the same command_ids (the terminal answers
            # a repeated one with its stored result); then work that waited for the account.
            for pend in list(self._pending.values()):
                if pend.account_id == hs.account_id:
                    self._drive(pend, delivery.Reconnected(), tx)
            # A close or modify is never abandoned: one that got no answer after every send is revived.
            for command_id, pend in list(self._given_up.items()):
                if pend.account_id == hs.account_id and pend.kind != "execute":
                    del self._given_up[command_id]
                    pend.state = replace(pend.state, outcome=delivery.Outcome.PENDING)
                    self._pending[command_id] = pend
                    trade = self.trades.get(pend.trade_id)
                    if trade is not None and hs.account_id in trade.positions:
                        trade.positions[hs.account_id].in_flight.add(command_id)
                    log.warning(
                        "core_command_revived",
                        command_id=command_id,
                        slave=hs.account_id,
                        kind=pend.kind,
                        attempt=pend.state.attempt,
                    )
                    self._drive(pend, delivery.Reconnected(), tx)
            for trade in self.trades.values():
                pos = trade.positions.get(hs.account_id)
                if pos is not None:
                    self._pump(trade, pos, tx)

    def _evaluate(self, hs: m.Handshake, agent_id: str) -> Evaluation:
        return evaluate(
            hs,
            self.protocol,
            self.catalog,
            agent_id=agent_id,
            core_version=__version__,
            evaluation_id=self._ids.uuid7(),
            now_ms=self._clock.now_ms(),
            configured=self.config.allows(hs.account_id, hs.role),
        )

    def _send_evaluation(self, acc: Account, ev: Evaluation, tx: _Tx) -> None:
        """The verdict goes to the terminal at once (same commit as the handshake) and is recorded."""
        r = ev.result
        tx.sends.append(m.ToAccount(acc.account_id, r))
        tx.batch.evaluations.append(
            EvaluationRow(
                r.evaluation_id,
                r.account_id,
                r.pipe_role.value,
                r.status.value,
                r.protocol_version,
                acc.handshake.client_semver,
                to_json(r.errors),
                to_json(r.warnings),
                r.evaluated_at_ms,
            )
        )
        tx.batch.symbol_evaluations.extend(
            SymbolEvaluationRow(
                r.evaluation_id,
                e.canonical_symbol,
                e.broker_symbol,
                e.status.value,
                to_json(e.warnings),
                to_json(e.errors),
                e.spec_age_ms,
                e.evaluated_at_ms,
            )
            for e in r.symbols
        )
        issues = [i.code for i in (*r.errors, *r.warnings)]
        issues += [f"{e.broker_symbol}:{i.code}" for e in r.symbols for i in (*e.errors, *e.warnings)]
        self._count(f"handshake_{r.status.value.lower()}")
        level = {
            m.RegistrationStatus.ACCEPTED: log.info,
            m.RegistrationStatus.WARNING: log.warning,
            m.RegistrationStatus.REJECTED: log.error,
        }[r.status]
        level(
            "core_handshake_evaluated",
            account_id=acc.account_id,
            status=r.status.value,
            evaluation_id=r.evaluation_id,
            protocol_version=r.protocol_version,
            client_semver=acc.handshake.client_semver,
            issues=issues,
        )

    def _slave_views(self, master: str) -> list[SlaveView]:
        slaves = [a.account_id for a in self.accounts.values() if a.role is Role.SLAVE]
        views = []
        for a in self.config.followers(master, slaves):
            acc = self.accounts[a]
            views.append(
                SlaveView(
                    a,
                    acc.online,
                    acc.symbols,
                    self.policies.for_account(a),
                    acc.quotes,
                    acc.tick_values,
                    acc.snapshot.currency if acc.snapshot else "",
                    acc.tick_values_at_ms,
                    acc.registration.value,
                    acc.rejected_symbols,
                )
            )
        return views

    # ----------------------------------------------------------------------------------------- master

    def _ack(
        self,
        tx: _Tx,
        master: str,
        trade_id: str,
        trace_id: str,
        status: m.AckStatus,
        event_id: str | None = None,
        message: str = "",
        error_code: ErrorCode = ErrorCode.NO_ERROR,
    ) -> None:
        tx.sends.append(
            m.ToAccount(master, m.TradeIntentAck(trade_id, trace_id, status, event_id, error_code, message))
        )

    def _on_intent(self, acc: Account, intent: m.TradeIntent, received_ms: int, tx: _Tx) -> None:
        blog = log.bind(trade_id=intent.trade_id, trace_id=intent.trace_id, master=acc.account_id)
        now = self._clock.now_ms()
        if acc.role is not Role.MASTER:
            blog.warning("core_intent_from_slave_ignored")
            return
        if intent.trade_id in self._seen_trade_ids or intent.trade_id in self.trades:
            blog.info("core_intent_duplicate", attempt=intent.attempt)
            self._count("duplicate_intents")
            self._ack(tx, acc.account_id, intent.trade_id, intent.trace_id, m.AckStatus.DUPLICATE)
            return
        self._prune(now)
        if self._too_old(intent.trade_id, now):
            blog.warning("core_intent_too_old", window_ms=self.config.dedupe_window_ms)
            self._event(
                tx, "intent_refused", trade_id=intent.trade_id, account_id=acc.account_id, reason="too old"
            )
            self._ack(
                tx,
                acc.account_id,
                intent.trade_id,
                intent.trace_id,
                m.AckStatus.REJECTED,
                None,
                "trade_id is older than core.dedupe_window_ms: it cannot be told from a duplicate",
            )
            return
        canonical = canonical_symbol(intent.symbol, acc.handshake.symbol_mappings)
        row = TradeRow(
            intent.trade_id,
            acc.account_id,
            intent.ticket,
            canonical,
            intent.symbol,
            intent.side.value,
            intent.lot_size,
            intent.price,
            intent.magic_number,
            intent.trace_id,
            intent.opened_at_ms or received_ms,
            intent.stop_loss,
            intent.take_profit,
        )
        trade = Trade(row, intent, canonical, comment=trade_comment(intent.trade_id))
        self.trades[intent.trade_id] = trade
        self._seen_trade_ids.add(intent.trade_id)
        tx.batch.trades.append(row)
        self._event(
            tx,
            "trade_opened",
            trade_id=intent.trade_id,
            account_id=acc.account_id,
            trace_id=intent.trace_id,
            symbol=intent.symbol,
            canonical=canonical,
            side=intent.side.value,
            lots=intent.lot_size,
            price=intent.price,
            ticket=intent.ticket,
            attempt=intent.attempt,
        )
        self._count("trades")
        copies: list[dict[str, object]] = []
        omitted: list[dict[str, object]] = []
        for plan in plan_open(intent, canonical, self._slave_views(acc.account_id), now, received_ms):
            if isinstance(plan, Copy):
                cmd = self._decide_copy(trade, plan, now, tx)
                copies.append(
                    {
                        "slave": plan.account_id,
                        "symbol": plan.broker_symbol,
                        "lots": plan.lot_size,
                        "sizing": plan.detail.get("sizing"),
                        "risk": plan.detail.get("effective_risk"),
                        "stop_loss": plan.stop_loss,
                        "stops_after_fill": plan.after_fill is not None,
                        "command_id": cmd.command_id,
                    }
                )
            else:
                tx.batch.decisions.append(
                    DecisionRow(
                        self._ids.uuid7(),
                        intent.trade_id,
                        plan.account_id,
                        "omit",
                        plan.reason,
                        None,
                        to_json(plan.detail),
                        now,
                    )
                )
                self._count("omitted")
                omitted.append({"slave": plan.account_id, "reason": plan.reason, **plan.detail})
        # One line per fan-out carries every decision (the store keeps one receipt row per slave).
        blog.info(
            "core_trade_fanout",
            symbol=intent.symbol,
            canonical=canonical,
            side=intent.side.value,
            lots=intent.lot_size,
            price=intent.price,
            copies=copies,
            omitted=omitted,
        )
        if omitted:
            blog.warning("core_copy_omitted", omitted=omitted)
        self._ack(tx, acc.account_id, intent.trade_id, intent.trace_id, m.AckStatus.OK)

    def _decide_copy(self, trade: Trade, plan: Copy, now: int, tx: _Tx) -> m.ExecuteOrder:
        intent = trade.intent
        cmd = m.ExecuteOrder(
            self._ids.uuid7(),
            intent.trade_id,
            intent.trace_id,
            plan.broker_symbol,
            intent.side,
            plan.lot_size,
            intent.magic_number,
            trade.comment,
            plan.stop_loss,
            plan.take_profit,
            master_price=intent.price,
            max_slippage_points=plan.max_slippage_points,
            max_spread_points=plan.max_spread_points,
        )
        pos = SlavePosition(plan.account_id, plan.broker_symbol, plan.spec, after_fill=plan.after_fill)
        trade.positions[plan.account_id] = pos
        tx.batch.decisions.append(
            DecisionRow(
                self._ids.uuid7(),
                intent.trade_id,
                plan.account_id,
                "copy",
                "copied",
                plan.lot_size,
                to_json(_copy_detail(plan)),
                now,
            )
        )
        self._issue(trade, pos, cmd, "execute", tx)
        return cmd

    def _issue(
        self,
        trade: Trade,
        pos: SlavePosition,
        cmd: m.Command,
        kind: CommandKind,
        tx: _Tx,
    ) -> None:
        now = self._clock.now_ms()
        tx.batch.commands.append(
            CommandRow(
                cmd.command_id,
                cmd.trade_id,
                pos.account_id,
                kind,
                cmd.trace_id,
                _compact(cmd, trade.comment),
                now,
            )
        )
        pend = Pending(cmd, kind, pos.account_id, cmd.trade_id)
        self._pending[cmd.command_id] = pend
        pos.in_flight.add(cmd.command_id)
        self._drive(pend, delivery.Journaled(), tx)
        self._count(f"{kind}_sent")

    def _drive(self, pend: Pending, event: delivery.CommandInput, tx: _Tx) -> list[delivery.Effect]:
        """Feed the command's delivery machine and carry out its effects into this transaction."""
        now = self._clock.now_ms()
        state, effects = delivery.command_transition(pend.state, event, now, self.delivery)
        pend.state = state
        cmd = pend.command
        for effect in effects:
            if isinstance(effect, delivery.Persist):
                tx.batch.journal.append(
                    JournalRow(
                        cmd.command_id,
                        cmd.trade_id,
                        pend.account_id,
                        pend.kind,
                        state.stage.name,
                        state.outcome.value,
                        state.attempt,
                        state.next_retry_at_ms,
                        state.last_error,
                        now,
                    )
                )
            elif isinstance(effect, delivery.Send):
                out = cmd if effect.attempt == 1 else replace(cmd, attempt=effect.attempt)
                tx.sends.append(m.ToAccount(pend.account_id, out))
                if effect.attempt > 1:
                    self._count("resends")
                    tx.batch.retry_events.append(
                        RetryEventRow(
                            self._ids.uuid7(), cmd.command_id, effect.attempt, state.last_error, now
                        )
                    )
                    log.warning(
                        "core_command_resent",
                        command_id=cmd.command_id,
                        trade_id=cmd.trade_id,
                        trace_id=cmd.trace_id,
                        slave=pend.account_id,
                        kind=pend.kind,
                        attempt=effect.attempt,
                        reason=state.last_error,
                    )
            elif isinstance(effect, delivery.RetryAt):
                self._timers.at(effect.at_ms, cmd.command_id)
            elif (
                isinstance(effect, delivery.Done)
                and not effect.ok
                and event.__class__ is not delivery.Confirmed
            ):
                self._gave_up(pend, effect.reason, tx)
            elif isinstance(effect, delivery.Alert):
                log.error(
                    "core_delivery_alert",
                    command_id=cmd.command_id,
                    trade_id=cmd.trade_id,
                    slave=pend.account_id,
                    kind=pend.kind,
                    reason=effect.reason,
                )
            elif isinstance(effect, delivery.Invalid):
                log.warning(
                    "core_delivery_invalid_input",
                    command_id=cmd.command_id,
                    state=effect.state,
                    input=effect.input,
                    reason=effect.reason,
                )
        return effects

    def _gave_up(self, pend: Pending, reason: str, tx: _Tx) -> None:
        """No result after every send: the command failed. An unconfirmed open is an omission with its
        reason; an unconfirmed close or modify leaves a slave position that needs a person (alerted), and
        is sent again when the terminal reconnects."""
        cmd = pend.command
        now = self._clock.now_ms()
        self._pending.pop(cmd.command_id, None)
        self._given_up[cmd.command_id] = pend
        tx.drops.append(m.DropCommand(pend.account_id, cmd.command_id, reason))
        tx.batch.command_updates.append(
            CommandUpdate(
                cmd.command_id, "failed", ErrorCode.ERR_TIMEOUT.value, to_json({"reason": reason}), now
            )
        )
        tx.batch.retry_events.append(
            RetryEventRow(self._ids.uuid7(), cmd.command_id, pend.state.attempt, f"gave up: {reason}", now)
        )
        self._event(
            tx,
            "command_gave_up",
            trade_id=cmd.trade_id,
            account_id=pend.account_id,
            command_id=cmd.command_id,
            trace_id=cmd.trace_id,
            command_kind=pend.kind,
            reason=reason,
        )
        self._count(f"{pend.kind}_failed")
        self._count("gave_up")
        trade = self.trades.get(pend.trade_id)
        pos = trade.positions.get(pend.account_id) if trade else None
        if pend.kind == "execute":
            log.error(
                "core_copy_failed",
                trade_id=cmd.trade_id,
                slave=pend.account_id,
                reason=reason,
                command_id=cmd.command_id,
            )
        else:
            log.critical(
                "core_slave_position_needs_attention",
                trade_id=cmd.trade_id,
                slave=pend.account_id,
                command_kind=pend.kind,
                reason=reason,
                command_id=cmd.command_id,
                ticket=getattr(cmd, "ticket", None),
            )
        if trade is not None and pos is not None:
            pos.in_flight.discard(cmd.command_id)
            if pend.kind == "execute":
                pos.failed = True
            self._pump(trade, pos, tx)
            self._maybe_forget(trade)

    def _too_old(self, trade_id: str, now_ms: int) -> bool:
        return uuid7_time_ms(trade_id) < now_ms - self.config.dedupe_window_ms

    PRUNE_EVERY_MS = 60_000

    def _prune(self, now_ms: int) -> None:
        """Forget, about once a minute, trade ids and given-up commands older than the dedupe window (by
        their UUIDv7 time): memory stays bounded however long Core runs. Open trades stay in ``trades``;
        a closed trade keeps only its id here (``_maybe_forget`` drops the rest)."""
        if now_ms - self._pruned_at_ms < self.PRUNE_EVERY_MS:
            return
        self._pruned_at_ms = now_ms
        horizon = now_ms - self.config.dedupe_window_ms
        self._seen_trade_ids = {t for t in self._seen_trade_ids if uuid7_time_ms(t) >= horizon}
        for command_id in [c for c in self._given_up if uuid7_time_ms(c) < horizon]:
            del self._given_up[command_id]

    def _master_trade(
        self, acc: Account, trade_id: str, event_id: str, trace_id: str, kind: str, tx: _Tx
    ) -> Trade | None:
        trade = self.trades.get(trade_id)
        if trade is None and self._too_old(trade_id, self._clock.now_ms()):
            log.warning(f"core_{kind}_too_old", trade_id=trade_id, event_id=event_id, master=acc.account_id)
            self._ack(
                tx,
                acc.account_id,
                trade_id,
                trace_id,
                m.AckStatus.REJECTED,
                event_id,
                "trade_id is older than core.dedupe_window_ms and not open here",
            )
            return None
        if trade is None or trade.row.master_account != acc.account_id:
            known = trade_id in self._seen_trade_ids
            log.warning(
                f"core_{kind}_for_unknown_trade",
                trade_id=trade_id,
                event_id=event_id,
                master=acc.account_id,
                already_closed=known,
            )
            # An event for a trade whose open has not arrived yet (a lost or reordered line): the master must
            # keep it and send it again, or the open, when it comes, would be copied and never closed.
            status = m.AckStatus.DUPLICATE if known else m.AckStatus.RETRY
            self._ack(
                tx,
                acc.account_id,
                trade_id,
                trace_id,
                status,
                event_id,
                "trade already closed" if known else "unknown trade_id: its open has not arrived yet",
            )
            return None
        if event_id in trade.events_seen:
            log.info(f"core_{kind}_duplicate", trade_id=trade_id, event_id=event_id)
            self._ack(tx, acc.account_id, trade_id, trace_id, m.AckStatus.DUPLICATE, event_id)
            return None
        trade.events_seen.add(event_id)
        return trade

    def _on_close(self, acc: Account, close: m.TradeClose, tx: _Tx) -> None:
        trade = self._master_trade(acc, close.trade_id, close.event_id, close.trace_id, "close", tx)
        if trade is None:
            return
        now = self._clock.now_ms()
        fraction = 1.0 if not close.is_partial else close.fraction
        self._event(
            tx,
            "master_partial_close" if close.is_partial else "master_close",
            trade_id=close.trade_id,
            account_id=acc.account_id,
            trace_id=close.trace_id,
            event_id=close.event_id,
            lots=close.lot_size,
            remaining=close.remaining_lots,
            new_ticket=close.new_ticket,
            price=close.price,
            fraction=fraction,
        )
        log.info(
            "core_master_close",
            trade_id=close.trade_id,
            trace_id=close.trace_id,
            event_id=close.event_id,
            partial=close.is_partial,
            lots=close.lot_size,
            remaining=close.remaining_lots,
            fraction=fraction,
        )
        if not close.is_partial:
            trade.closed = True
            tx.batch.trade_updates.append(TradeUpdate(close.trade_id, "closed", now))
        for pos in trade.positions.values():
            pos.queue.append(Op("close", fraction=fraction, event_id=close.event_id))
            self._pump(trade, pos, tx)
        self._ack(tx, acc.account_id, close.trade_id, close.trace_id, m.AckStatus.OK, close.event_id)
        self._maybe_forget(trade)

    def _on_modify(self, acc: Account, mod: m.TradeModify, tx: _Tx) -> None:
        trade = self._master_trade(acc, mod.trade_id, mod.event_id, mod.trace_id, "modify", tx)
        if trade is None:
            return
        self._event(
            tx,
            "master_modify",
            trade_id=mod.trade_id,
            account_id=acc.account_id,
            trace_id=mod.trace_id,
            event_id=mod.event_id,
            stop_loss=mod.stop_loss,
            take_profit=mod.take_profit,
            mirrored=self.config.copy_sl_tp,
        )
        log.info(
            "core_master_modify",
            trade_id=mod.trade_id,
            trace_id=mod.trace_id,
            event_id=mod.event_id,
            stop_loss=mod.stop_loss,
            take_profit=mod.take_profit,
            mirrored=self.config.copy_sl_tp,
        )
        if self.config.copy_sl_tp:
            for pos in trade.positions.values():
                pos.queue.append(
                    Op("modify", stop_loss=mod.stop_loss, take_profit=mod.take_profit, event_id=mod.event_id)
                )
                self._pump(trade, pos, tx)
        self._ack(tx, acc.account_id, mod.trade_id, mod.trace_id, m.AckStatus.OK, mod.event_id)

    # ------------------------------------------------------------------------------------ slave positions

    def _pump(self, trade: Trade, pos: SlavePosition, tx: _Tx) -> None:
        """Issue the next queued operation of a position once nothing is in flight on it."""
        # Commands are issued whether the terminal is online or not: once journaled they survive a restart
        # and go out when it is back. Only a position recovered from the store waits for its symbol spec.
        acc = self.accounts.get(pos.account_id)
        if acc is not None and acc.registration is m.RegistrationStatus.REJECTED:
            return  # held until a handshake or a re-evaluation accepts the account
        if pos.spec is None:
            pos.spec = acc.symbols.get(trade.canonical) if acc is not None else None
        spec = pos.spec
        while spec is not None and not pos.in_flight and pos.queue:
            op = pos.queue.popleft()
            if op.event_id is not None:
                # Recorded with what the operation produces (or with nothing, when there is nothing to
                # apply): a restart re-queues exactly the master events without this mark.
                self._event(
                    tx,
                    "op_applied",
                    trade_id=trade.row.trade_id,
                    account_id=pos.account_id,
                    event_id=op.event_id,
                    op=op.kind,
                )
            if not pos.tickets:
                if pos.failed or pos.opened:
                    log.info(
                        "core_nothing_to_apply",
                        trade_id=trade.row.trade_id,
                        slave=pos.account_id,
                        op=op.kind,
                        reason="open failed"
                        if pos.failed
                        else f"closed by the broker ({pos.closed_by_broker})"
                        if pos.closed_by_broker
                        else "no open tickets",
                    )
                continue
            intent = trade.intent
            for ticket, lots in sorted(pos.tickets.items()):
                cmd: m.Command
                if op.kind == "close":
                    plan = plan_partial_close(lots, op.fraction, spec)
                    if plan.lots <= 0:
                        self._event(
                            tx,
                            "partial_close_skipped",
                            trade_id=intent.trade_id,
                            account_id=pos.account_id,
                            trace_id=intent.trace_id,
                            ticket=ticket,
                            lots=lots,
                            fraction=op.fraction,
                            reason=plan.reason,
                        )
                        log.info(
                            "core_partial_close_skipped",
                            trade_id=intent.trade_id,
                            slave=pos.account_id,
                            ticket=ticket,
                            lots=lots,
                            fraction=op.fraction,
                            reason=plan.reason,
                        )
                        continue
                    cmd = m.CloseOrder(
                        self._ids.uuid7(),
                        intent.trade_id,
                        intent.trace_id,
                        ticket,
                        pos.broker_symbol,
                        plan.lots,
                        intent.magic_number,
                    )
                    log.info(
                        "core_close_decided",
                        trade_id=intent.trade_id,
                        trace_id=intent.trace_id,
                        slave=pos.account_id,
                        ticket=ticket,
                        lots=plan.lots,
                        full=plan.full,
                        reason=plan.reason,
                        command_id=cmd.command_id,
                    )
                elif op.kind == "modify":
                    if op.exact:
                        sl, tp = op.stop_loss, op.take_profit
                        pos.after_fill = (sl, tp)
                    else:
                        policy = self.policies.for_account(pos.account_id)
                        entry = pos.entry_price or intent.price
                        sl, tp = modified_stops(
                            policy, intent.side, spec, op.stop_loss, op.take_profit, entry
                        )
                        pos.after_fill = None  # the master's new levels supersede stops still waiting
                    cmd = m.ModifyOrder(
                        self._ids.uuid7(),
                        intent.trade_id,
                        intent.trace_id,
                        ticket,
                        pos.broker_symbol,
                        sl,
                        tp,
                    )
                else:  # pragma: no cover - opens are issued by _decide_copy only
                    continue
                self._issue(trade, pos, cmd, op.kind, tx)
                if op.exact:
                    pos.after_fill_command = cmd.command_id

    def _on_result(self, acc: Account, res: m.Result, tx: _Tx) -> None:
        pend = self._pending.get(res.command_id)
        late = pend is None and res.command_id in self._given_up
        if late:
            pend = self._given_up.pop(res.command_id)
        blog = log.bind(
            trade_id=res.trade_id, trace_id=res.trace_id, command_id=res.command_id, slave=acc.account_id
        )
        if pend is None:
            # A re-sent command is answered again with the same result: expected, nothing to do.
            held = self.trades.get(res.trade_id)
            dup = (
                res.command_id in held.done_commands
                if held is not None
                else res.trade_id in self._seen_trade_ids
            )
            (blog.info if dup else blog.warning)(
                "core_result_duplicate" if dup else "core_result_unknown_command", result=type(res).__name__
            )
            self._event(
                tx,
                "result_duplicate" if dup else "result_unknown_command",
                trade_id=res.trade_id,
                account_id=acc.account_id,
                command_id=res.command_id,
                trace_id=res.trace_id,
            )
            return
        if pend.account_id != acc.account_id:
            blog.error("core_result_from_wrong_account", expected=pend.account_id)
            if late:
                self._given_up[res.command_id] = pend
            return
        if late:
            # The command was given up, yet it executed: what the slave did is the truth and is recorded.
            blog.warning("core_result_after_give_up", result=type(res).__name__, success=res.success)
        else:
            del self._pending[res.command_id]
        self._drive(pend, delivery.Confirmed(res.success, res.error_code.value), tx)
        now = self._clock.now_ms()
        trade = self.trades.get(pend.trade_id)
        if trade is not None:
            trade.done_commands.add(res.command_id)
        pos = trade.positions.get(acc.account_id) if trade else None
        if pos is not None:
            pos.in_flight.discard(res.command_id)
        status: CommandStatus = "ok" if res.success else "failed"
        tx.batch.command_updates.append(
            CommandUpdate(res.command_id, status, res.error_code.value, _compact(res), now)
        )
        if not res.success and res.error_code in OMITTED_AT_SLAVE:
            # The slave's live-price re-check kept the order from the broker: an omission, not a failure.
            self._count("omitted_at_slave")
            blog.warning("core_copy_omitted_at_slave", reason=res.error_code.value, message=res.error_message)
        elif not res.success and pos is not None and res.command_id == pos.after_fill_command:
            pass  # stops refused after the fill: _after_fill_result decides (usually: wait for the price)
        elif not res.success:
            self._count(f"{pend.kind}_failed")
            blog.error(
                f"core_{pend.kind}_failed",
                error_code=res.error_code.value,
                mt4_error=res.mt4_error,
                message=res.error_message,
            )
        if isinstance(res, m.ExecutionResult) and pos is not None:
            if res.success and res.ticket is not None:
                lots = res.executed_lots or pend.command.lot_size  # type: ignore[union-attr]
                pos.tickets[res.ticket] = lots
                pos.opened = True
                pos.failed = False
                if res.executed_price:
                    pos.entry_price = res.executed_price
                if pos.after_fill is not None:
                    sl, tp = pos.after_fill
                    pos.after_fill = None
                    # before anything else queued: the position must not stay without its stops
                    pos.queue.appendleft(Op("modify", stop_loss=sl, take_profit=tp, exact=True))
                    blog.info("core_stops_after_fill", ticket=res.ticket, stop_loss=sl, take_profit=tp)
                if late and trade is not None and trade.closed:
                    pos.queue.append(Op("close"))  # the master closed meanwhile: so does this slave
                tx.batch.tickets.append(
                    TicketRow(acc.account_id, res.ticket, res.trade_id, pos.broker_symbol, lots, now)
                )
                self._count("copied")
                blog.info("core_copied", ticket=res.ticket, lots=lots, price=res.executed_price)
            else:
                pos.failed = True
        elif isinstance(res, m.CloseResult) and pos is not None and res.success:
            lots_before = pos.tickets.pop(res.ticket, 0.0)
            tx.batch.ticket_updates.append(
                TicketUpdate(acc.account_id, res.ticket, "closed", res.closed_lots or lots_before, now)
            )
            if res.new_ticket is not None and res.remaining_lots > 0:
                pos.tickets[res.new_ticket] = res.remaining_lots
                tx.batch.tickets.append(
                    TicketRow(
                        acc.account_id,
                        res.new_ticket,
                        res.trade_id,
                        pos.broker_symbol,
                        res.remaining_lots,
                        now,
                        parent_ticket=res.ticket,
                    )
                )
            self._count("slave_closes")
            blog.info(
                "core_slave_closed",
                ticket=res.ticket,
                closed_lots=res.closed_lots,
                new_ticket=res.new_ticket,
                remaining=res.remaining_lots,
            )
        elif isinstance(res, m.ModifyResult) and pos is not None and res.command_id == pos.after_fill_command:
            self._after_fill_result(acc, trade, pos, res, blog)
        elif isinstance(res, m.ModifyResult) and res.success:
            blog.info(
                "core_slave_modified", ticket=res.ticket, stop_loss=res.stop_loss, take_profit=res.take_profit
            )
        if trade is not None and pos is not None:
            self._pump(trade, pos, tx)
            self._maybe_forget(trade)

    def _on_command_ack(self, agent_id: str, ack: m.CommandAck, tx: _Tx) -> None:
        """The Agent's hop: buffered for an offline terminal, delivered into the terminal, or not."""
        pend = self._pending.get(ack.command_id)
        if pend is None or pend.account_id != ack.account_id:
            return
        if ack.result is m.AckResult.PENDING:
            self._drive(pend, delivery.AgentBuffered(), tx)
            return
        if ack.result is m.AckResult.OK:
            self._drive(pend, delivery.PipeDelivered(), tx)
            return
        log.warning(
            "core_command_not_delivered",
            command_id=ack.command_id,
            slave=ack.account_id,
            agent_id=agent_id,
            kind=pend.kind,
            stage=ack.stage.value,
            reason=ack.reason,
            attempt=pend.state.attempt,
        )
        self._event(
            tx,
            "command_not_delivered",
            trade_id=pend.trade_id,
            account_id=ack.account_id,
            command_id=ack.command_id,
            command_kind=pend.kind,
            stage=ack.stage.value,
            reason=ack.reason,
        )
        # The same command goes out again after the backoff, or when the terminal reconnects.
        self._drive(pend, delivery.NotDelivered(f"{ack.stage.value}: {ack.reason}"), tx)

    def _after_fill_result(
        self, acc: Account, trade: Trade | None, pos: SlavePosition, res: m.ModifyResult, blog: Any
    ) -> None:
        """The modify that puts on the stops StopLevel kept off the order: done, or (the price is still too
        close) retried as soon as a quote allows it."""
        pos.after_fill_command = None
        if res.success:
            pos.after_fill = None
            blog.info("core_stops_set_after_fill", ticket=res.ticket, stop_loss=res.stop_loss)
        elif res.error_code is ErrorCode.ERR_INVALID_STOPS and trade is not None:
            acc.stops_waiting.add(trade.row.trade_id)
            blog.warning("core_stops_wait_for_price", ticket=res.ticket, intended=pos.after_fill)
        else:
            pos.after_fill = None

    def _retry_stops(self, acc: Account, tx: _Tx) -> None:
        for trade_id in list(acc.stops_waiting):
            trade = self.trades.get(trade_id)
            pos = trade.positions.get(acc.account_id) if trade else None
            if trade is None or pos is None or pos.after_fill is None or not pos.tickets:
                acc.stops_waiting.discard(trade_id)
                continue
            quote = acc.quotes.get(pos.broker_symbol)
            if pos.in_flight or pos.spec is None or quote is None:
                continue
            close_price = quote.bid if trade.intent.side is Side.BUY else quote.ask
            if stops_too_close(pos.spec, trade.intent.side, close_price, *pos.after_fill):
                continue
            acc.stops_waiting.discard(trade_id)
            sl, tp = pos.after_fill
            pos.queue.appendleft(Op("modify", stop_loss=sl, take_profit=tp, exact=True))
            self._pump(trade, pos, tx)

    def _ticket_owner(self, account_id: str, ticket: int) -> tuple[Trade, SlavePosition] | None:
        for trade in self.trades.values():
            pos = trade.positions.get(account_id)
            if pos is not None and ticket in pos.tickets:
                return trade, pos
        return None

    def _on_broker_closes(self, acc: Account, closes: list[m.ClosedPosition], tx: _Tx) -> None:
        """Slave positions the broker closed on its own (SL, TP, stop-out): the ticket is closed here too,
        the event recorded and alerted, and the position is never reopened; the master's later close of
        the trade has nothing left to do on this account."""
        acc.broker_closes_handled &= {c.ticket for c in closes}
        for close in closes:
            if close.ticket in acc.broker_closes_handled:
                continue
            owner = self._ticket_owner(acc.account_id, close.ticket)
            if owner is None:
                continue  # not (yet) known as ours: the fill may still be on its way; the snapshot repeats it
            trade, pos = owner
            if pos.in_flight:
                continue  # a command of ours may be what closed it: its result will say
            acc.broker_closes_handled.add(close.ticket)
            lots = pos.tickets.pop(close.ticket)
            pos.closed_by_broker = close.reason.value
            tx.batch.ticket_updates.append(
                TicketUpdate(acc.account_id, close.ticket, "closed", lots, close.closed_at_ms)
            )
            self._event(
                tx,
                "slave_closed_by_broker",
                trade_id=trade.row.trade_id,
                account_id=acc.account_id,
                trace_id=trade.row.trace_id,
                ticket=close.ticket,
                reason=close.reason.value,
                lots=lots,
                close_price=close.close_price,
                closed_at_ms=close.closed_at_ms,
            )
            self._count(f"slave_{close.reason.value.lower()}")
            (log.error if close.reason is m.CloseReason.STOP_OUT else log.warning)(
                "core_slave_closed_by_broker",
                trade_id=trade.row.trade_id,
                trace_id=trade.row.trace_id,
                slave=acc.account_id,
                ticket=close.ticket,
                reason=close.reason.value,
                lots=lots,
                close_price=close.close_price,
                alert=close.reason is m.CloseReason.STOP_OUT,
                reopened=False,
            )
            self._pump(trade, pos, tx)
            self._maybe_forget(trade)

    def _maybe_forget(self, trade: Trade) -> None:
        """A closed trade leaves memory once every slave position is flat and idle.

        Its trade_id stays known for dedupe."""
        if trade.closed and all(
            not p.in_flight and not p.tickets and not p.queue for p in trade.positions.values()
        ):
            self.trades.pop(trade.row.trade_id, None)
            log.info("core_trade_complete", trade_id=trade.row.trade_id, trace_id=trade.row.trace_id)
