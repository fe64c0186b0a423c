"""Core's async shell: the run loop, the reconciler (re-sends on the delivery machine's timers), retention,
the journal (group commit: what the workers applied meanwhile is written as one batch, before anything
leaves; held while the store is away), the sends after the commit, and rules changed without a restart.
What each message does is the synchronous engine's (``engine.py`` and the modules it dispatches to); the
router (``router.py``) hands each trade's messages, in order, to one of a pool of workers."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace

import structlog
import trio
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from echo.delivery.machine import Sent
from echo.delivery.machine import Settings as DeliverySettings
from echo.domain import messages as m
from echo.domain.config import CoreConfig, RouterConfig
from echo.domain.policy import Policies, Policy
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.ports.clock import Clock
from echo.ports.store import Store, StoreError
from echo.ports.transport import AgentUnavailable, CoreHub
from echo.services import instruments, tracing
from echo.services.core import accounts, engine, master, positions, recovery
from echo.services.core.alerts import AlertFeed
from echo.services.core.context import Context
from echo.services.core.journal import Journal
from echo.services.core.router import Router
from echo.services.core.state import Account, Pending, Trade, command_of
from echo.services.core.tx import Tx
from echo.services.ids import IdFactory
from echo.services.timers import DueTimers

__all__ = ["Core", "command_of"]

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


class Core:
    PRUNE_EVERY_MS = master.PRUNE_EVERY_MS
    HELD_RETRY_S = Journal.HELD_RETRY_S

    def __init__(
        self,
        hub: CoreHub,
        store: Store,
        clock: Clock,
        config: CoreConfig,
        *,
        delivery_settings: DeliverySettings | None = None,
        ids: IdFactory | None = None,
        policies: Policies | None = None,
        protocol: ProtocolPolicy | None = None,
        catalog: SymbolCatalog | None = None,
        router: RouterConfig | None = None,
        retention_days: int = 90,
        alerts: AlertFeed | None = None,
    ) -> None:
        self._hub = hub
        self.alerts = alerts
        """Alerts to people: handed the facts of each batch once it is recorded."""
        self.retention_ms = retention_days * 86_400_000
        """Closed trades are purged from the store this long after they closed (``store.retention_days``)."""
        self._timers = DueTimers(clock)
        """When the reconciler looks at a command again."""
        self.ctx = Context(
            clock,
            ids or IdFactory(clock),
            config,
            policies or Policies(Policy(fixed_lot=config.fixed_lot, copy_sl_tp=config.copy_sl_tp)),
            protocol or ProtocolPolicy(),
            catalog or SymbolCatalog(),
            delivery_settings or DeliverySettings(),
            self._timers.at,
        )
        """What the engine's handlers work on."""
        self._journal = Journal(
            store,
            deliver=self._deliver,
            rollback=self._roll_back,
            stale=lambda out: engine.stale(self.ctx, out),
            count=self.ctx.count,
        )
        self.router = Router(
            router or RouterConfig(),
            apply=self.apply,
            finish=self._finish,
            reject_busy=self.reject_busy,
            trade_of_command=self.trade_of_command,
            in_flight=self._in_flight_online,
        )
        self._send_timeout_s = self.router.config.worker_timeout_ms / 1000.0
        _LIVE.add(self)
        instruments.core_started(self)
        self._store = store
        self._clock = clock
        self._changed = trio.Event()

    # --------------------------------------------------------------------------- the engine's state, read

    @property
    def config(self) -> CoreConfig:
        return self.ctx.config

    @property
    def policies(self) -> Policies:
        return self.ctx.policies

    @property
    def protocol(self) -> ProtocolPolicy:
        return self.ctx.protocol

    @property
    def catalog(self) -> SymbolCatalog:
        return self.ctx.catalog

    @property
    def delivery(self) -> DeliverySettings:
        return self.ctx.delivery

    @property
    def accounts(self) -> dict[str, Account]:
        return self.ctx.state.accounts

    @property
    def trades(self) -> dict[str, Trade]:
        return self.ctx.state.trades

    @property
    def stats(self) -> dict[str, int]:
        return self.ctx.stats

    @property
    def _pending(self) -> dict[str, Pending]:
        return self.ctx.state.pending

    # ------------------------------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        recovered = await recovery.load(self.ctx, self._store)
        log.info(
            "core_started",
            known_trades=len(self.ctx.state.seen_trade_ids),
            fixed_lot=self.config.fixed_lot,
            recovered_trades=recovered,
            pending_commands=len(self.ctx.state.pending),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconciler)
            nursery.start_soon(self._journal.rewrite_held)
            nursery.start_soon(self._retention)
            if self.alerts is not None:
                await nursery.start(self.alerts.run)
            await nursery.start(self.router.run, self._hub)
            task_status.started()

    async def handle(self, agent_id: str, msg: m.AgentToCore) -> None:
        await self.handle_many([(agent_id, msg)])

    async def handle_many(self, msgs: list[tuple[str, m.AgentToCore]]) -> None:
        """Handle messages from Agents as one group, bypassing the router (tests drive Core this way)."""
        await self._finish(self.apply(msgs))

    def apply(self, msgs: list[tuple[str, m.AgentToCore]]) -> Tx:
        """The engine's transaction for a group of messages, queued for the journal."""
        with instruments.timed(instruments.APPLY_DURATION):
            tx = engine.apply(self.ctx, msgs)
        if self.alerts is not None:
            self.alerts.applied(msgs)
        self._journal.enqueue(tx)
        return tx

    def reject_busy(self, agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> Tx:
        """A master event the router had no room for: recorded, and the master told to send it again."""
        tx = master.reject_busy(self.ctx, agent_id, msg, worker_id, depth)
        self._journal.enqueue(tx)
        return tx

    def trade_of_command(self, command_id: str) -> str | None:
        return engine.trade_of_command(self.ctx, command_id)

    def _roll_back(self, tx: Tx) -> None:
        engine.rollback(self.ctx, tx)

    RESEND_BEHIND_MS = 50
    """A due timer waits while the oldest message waiting for a router worker (or, in split mode, in the
    hub for its Agent's link) has waited longer than this: the answer it waits for may be among them."""
    RESEND_DEFER_MIN_MS = 200
    """A timer that waits, waits at least this long: a long backlog is not looked at again per message."""

    async def _reconciler(self) -> None:
        """Re-sends commands whose result did not come back in time (same command_id), and gives up after
        ``max_retries`` sends; the rules are the delivery machine's, this task only keeps the clock. While
        Core is behind what arrived (a busy copier), a due timer waits that long again: the answer may be
        queued in Core itself, and a re-send would only add to the work."""
        while True:
            now, due = await self._timers.next_due()
            due = self._not_behind(now, due)
            if not due:
                continue
            tx = engine.timers_due(self.ctx, due)
            self._journal.enqueue(tx)
            await self._finish(tx)

    def _not_behind(self, now: int, due: list[str]) -> list[str]:
        """The due commands whose timers may fire now; the others wait as long again as Core is behind on
        their Agent's link (answers not read yet, or messages to that Agent not written yet: the command
        itself may not have left), and at least ``RESEND_DEFER_MIN_MS``."""
        behind: dict[str | None, int] = {}
        pending, accounts = self.ctx.state.pending, self.accounts
        ready: list[str] = []
        for command_id in due:
            pend = pending.get(command_id)
            acc = accounts.get(pend.account_id) if pend is not None else None
            agent_id = acc.agent_id if acc is not None else None
            if agent_id not in behind:
                behind[agent_id] = int(self.router.behind_s(agent_id) * 1000)
            wait_ms = behind[agent_id]
            if wait_ms > self.RESEND_BEHIND_MS:
                self._timers.at(now + max(wait_ms, self.RESEND_DEFER_MIN_MS), command_id)
                self.ctx.count("resends_deferred")
            else:
                ready.append(command_id)
        return ready

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
        before = self._clock.now_ms() - max(self.retention_ms, self.ctx.config.dedupe_window_ms)
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

    async def _finish(self, tx: Tx) -> None:
        """Wait until the batch is recorded, then send (never the other way round), then wake whoever waits
        for a change. Whoever finds the journal idle writes everything queued as one batch (group commit
        across workers)."""
        if tracing.ON and tracing.GROUP.get():
            settle_ns = time.time_ns()
            await self._journal.settle(tx)
            tracing.step("core.journal.commit", settle_ns, time.time_ns())
        else:
            await self._journal.settle(tx)
        if tx.held:
            # Not recorded yet: nothing leaves but the masters' RETRY; the rest goes once it is written.
            self.ctx.count("store_failures")
            if self.alerts is not None:
                self.alerts.store_failing("unavailable: the journal is held")
            for out in tx.retries:
                await self._to_account(out)
            self._changed.set()
            self._changed = trio.Event()
            return
        if not tx.ok:
            # Never send what was not recorded. The masters are told to retry their messages.
            self.ctx.count("store_failures")
            if self.alerts is not None:
                self.alerts.store_failing("it refused a batch, which was rolled back")
            self._roll_back(tx)
        await self._deliver(tx)

    async def _deliver(self, tx: Tx) -> None:
        """Send what a recorded (or rolled back) transaction produced; wake whoever waits for a change."""
        failed: list[tuple[str, m.AgentToCore]] = []
        if tx.ok and self.alerts is not None:
            self.alerts.committed(tx.batch)  # never blocks: the sink queues
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

    async def set_delivery(self, settings: DeliverySettings, heartbeat_interval_ms: int) -> None:
        """New delivery settings, applied without a restart: the next timers use them, and every Agent
        (hence every terminal) is told."""
        old, self.ctx.delivery = self.ctx.delivery, settings
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
        ctx = self.ctx
        ctx.config, ctx.policies, ctx.protocol, ctx.catalog = config, policies, protocol, catalog
        log.info("core_rules_changed", accounts=len(self.accounts))
        tx = Tx()
        for acc in list(self.accounts.values()):
            accounts.reevaluate(self.ctx, acc, tx)
        self._journal.enqueue(tx)
        await self._finish(tx)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (without polling) until ``predicate()`` holds after some message was handled."""
        while not predicate():
            await self._changed.wait()

    def _in_flight_online(self) -> int:
        """Commands sent to connected slaves and not answered yet: what Core still has to get through. A
        command waiting for an offline terminal is not work Core can do, so it does not count."""
        pending = self.ctx.state.pending
        if len(pending) < self.router.config.max_in_flight:
            return len(pending)  # below the bound whoever is online: no need to look closer
        accounts = self.ctx.state.accounts
        n = 0
        for pend in pending.values():
            acc = accounts.get(pend.account_id)
            if acc is not None and acc.online:
                n += 1
        return n

    @property
    def in_flight(self) -> int:
        return len(self.ctx.state.pending)

    @property
    def recorded(self) -> bool:
        """Everything applied is in the store: nothing queued, held or being written."""
        return self._journal.recorded

    @property
    def remembered(self) -> tuple[int, int]:
        """(trade ids held for dedupe, trades held whole): the first is bounded by the dedupe window, the
        second by the trades still open or with slave work left (closed trades are forgotten)."""
        return len(self.ctx.state.seen_trade_ids), len(self.trades)

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
        if tracing.ON and isinstance(out, m.ToAccount):
            problem = await self._send_traced(acc.agent_id, out)
        else:
            problem = await self._to_agent(acc.agent_id, out)
        if problem is None:
            if isinstance(out, m.ToAccount) and isinstance(
                out.message, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder
            ):
                # it left now: the wait for its answer counts from here, not from when it was queued
                pend = self.ctx.state.pending.get(out.message.command_id)
                if pend is not None:
                    positions.drive(self.ctx, pend, Sent(), Tx())
            return
        log.warning("core_agent_unavailable", account_id=out.account_id, agent_id=acc.agent_id, error=problem)
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

    async def _send_traced(self, agent_id: str, out: m.ToAccount) -> str | None:
        """``_to_agent`` with the traceparent of the router's span of what caused the message (an event
        ``core.sent`` of that span), so the Agent's write joins the trade's trace; a re-send outside the
        router (the reconciler's) gets a ``core.resend`` span of its own in the trade's trace."""
        trace_id = getattr(out.message, "trace_id", None)
        if trace_id is None:
            return await self._to_agent(agent_id, out)
        group = tracing.GROUP.get()
        spans = group.spans.get(trace_id) if group is not None else None
        span = spans[-1] if spans else None
        own = span is None
        if span is None:
            span = tracing.start(
                "core.resend",
                trace_id,
                attributes={"account_id": out.account_id, "message": type(out.message).__name__},
            )
        try:
            problem = await self._to_agent(agent_id, replace(out, traceparent=tracing.traceparent_of(span)))
            attrs = {"account_id": out.account_id, "message": type(out.message).__name__}
            span.add_event("core.sent", {**attrs, "error": problem} if problem else attrs)
            return problem
        finally:
            if own:
                span.end()
