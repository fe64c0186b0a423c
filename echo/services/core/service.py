"""Core's async shell: the run loop, the reconciler (re-sends on the delivery machine's timers), retention,
the journal (group commit: what the workers applied meanwhile is written as one batch, before anything
leaves; held while the store is away), the sends after the commit, and rules changed without a restart.
What each message does is the synchronous engine's (``engine.py`` and the modules it dispatches to); the
router (``router.py``) hands each trade's messages, in order, to one of a pool of workers."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Literal

import structlog
import trio
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from echo.delivery.machine import Settings as DeliverySettings
from echo.delivery.machine import Timeout
from echo.domain import messages as m
from echo.domain.config import CoreConfig, RouterConfig
from echo.domain.policy import Policies, Policy
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.ports.clock import Clock
from echo.ports.store import Batch, Store, StoreError, StoreUnavailable
from echo.ports.transport import AgentUnavailable, CoreHub
from echo.services.core import accounts, engine, master, positions, recovery
from echo.services.core.context import Context
from echo.services.core.router import Router
from echo.services.core.state import Account, Pending, Trade, command_of
from echo.services.core.tx import Tx, merge, retry_acks
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
    ) -> None:
        self._hub = hub
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
        self._journal: list[Tx] = []
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
            nursery.start_soon(self._rewrite_held)
            nursery.start_soon(self._retention)
            await nursery.start(self.router.run, self._hub)
            task_status.started()

    async def handle(self, agent_id: str, msg: m.AgentToCore) -> None:
        await self.handle_many([(agent_id, msg)])

    async def handle_many(self, msgs: list[tuple[str, m.AgentToCore]]) -> None:
        """Handle messages from Agents as one group, bypassing the router (tests drive Core this way)."""
        await self._finish(self.apply(msgs))

    def apply(self, msgs: list[tuple[str, m.AgentToCore]]) -> Tx:
        """The engine's transaction for a group of messages, queued for the journal."""
        tx = engine.apply(self.ctx, msgs)
        self._enqueue(tx)
        return tx

    def reject_busy(self, agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> Tx:
        """A master event the router had no room for: recorded, and the master told to send it again."""
        tx = master.reject_busy(self.ctx, agent_id, msg, worker_id, depth)
        self._enqueue(tx)
        return tx

    def trade_of_command(self, command_id: str) -> str | None:
        return engine.trade_of_command(self.ctx, command_id)

    def _roll_back(self, tx: Tx) -> None:
        engine.rollback(self.ctx, tx)

    async def _reconciler(self) -> None:
        """Re-sends commands whose result did not come back in time (same command_id), and gives up after
        ``max_retries`` sends; the rules are the delivery machine's, this task only keeps the clock."""
        while True:
            _, due = await self._timers.next_due()
            tx = Tx()
            for command_id in due:
                pend = self.ctx.state.pending.get(command_id)
                if pend is not None:
                    positions.drive(self.ctx, pend, Timeout(), tx)
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

    def _enqueue(self, tx: Tx) -> None:
        """Queue an applied transaction for the journal; the journal writes in this order."""
        if tx.batch:
            self._journal.append(tx)
        else:
            tx.done = True

    async def _finish(self, tx: Tx) -> None:
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
            self.ctx.count("store_failures")
            for out in tx.retries:
                await self._to_account(out)
            self._changed.set()
            self._changed = trio.Event()
            return
        if not tx.ok:
            # Never send what was not recorded. The masters are told to retry their messages.
            self.ctx.count("store_failures")
            self._roll_back(tx)
        await self._deliver(tx)

    async def _deliver(self, tx: Tx) -> None:
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
        landed: list[Tx] = []
        try:
            outcome = await self._write_with_retries(merge(group))
            if outcome == "rejected" and self._unsure:
                landed = await self._landed(group)
                if landed:
                    log.warning("core_journal_landed_before", transactions=len(landed))
                    group = group[len(landed) :]
                    outcome = await self._write_with_retries(merge(group)) if group else "written"
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
                    t.held, t.done, t.retries = True, True, retry_acks(t)
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
                self._roll_back(t)
                t.sends = []  # its masters were told to retry when it was held
            else:
                t.sends = [out for out in t.sends if not engine.stale(self.ctx, out)]
            await self._deliver(t)

    async def _landed(self, group: list[Tx]) -> list[Tx]:
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
                self.ctx.count("journal_retries")
                await trio.sleep(wait)
        return "rejected"  # pragma: no cover - the loop returns

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
        self._enqueue(tx)
        await self._finish(tx)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (without polling) until ``predicate()`` holds after some message was handled."""
        while not predicate():
            await self._changed.wait()

    @property
    def in_flight(self) -> int:
        return len(self.ctx.state.pending)

    @property
    def recorded(self) -> bool:
        """Everything applied is in the store: nothing queued, held or being written."""
        return not self._journal and not self._writing

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
