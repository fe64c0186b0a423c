"""Core's journal: group commit. Transactions applied by the workers queue here in order; whoever finds
the journal idle writes everything queued as one batch, before anything they produced leaves. A store
that is away holds the batch (written again, first, once it is back); a batch the store refuses is
rolled back with everything applied after it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
import trio

from echo.domain import messages as m
from echo.ports.store import Batch, Store, StoreError, StoreUnavailable
from echo.services import instruments
from echo.services.core.tx import Tx, merge, retry_acks

log = structlog.get_logger("echo.core")


class Journal:
    HELD_RETRY_S = 1.0
    """While a batch is held and no other write comes, the journal is tried again this often."""

    JOURNAL_BACKOFF_S = (0.02, 0.1, 0.5)
    """Waits between attempts to write a batch. Everything else waits meanwhile: the fan-out stops rather
    than send what is not journaled."""

    def __init__(
        self,
        store: Store,
        *,
        deliver: Callable[[Tx], Awaitable[None]],
        rollback: Callable[[Tx], None],
        stale: Callable[[m.ToAccount], bool],
        count: Callable[[str], None],
    ) -> None:
        self._store = store
        self._deliver = deliver
        """Sends what a transaction written late (after an outage) produced."""
        self._rollback = rollback
        self._stale = stale
        self._count = count
        self._queue: list[Tx] = []
        """Transactions applied and not yet written, in the order they were applied."""
        self._writing = False
        self._wrote = trio.Event()
        self._held = trio.Event()
        """Set when a batch is held (the store unavailable): ``rewrite_held`` takes over."""
        self._unsure = False
        """A write failed as unavailable since the last one that succeeded: it may have committed."""

    @property
    def recorded(self) -> bool:
        """Everything applied is in the store: nothing queued, held or being written."""
        return not self._queue and not self._writing

    async def settle(self, tx: Tx) -> None:
        """Wait until ``tx`` is written, held or refused, writing the queue when nobody else is."""
        while not tx.done:
            if self._writing:
                await self._wrote.wait()
                continue
            await self.write()

    def enqueue(self, tx: Tx) -> None:
        """Queue an applied transaction for the journal; the journal writes in this order."""
        if tx.batch:
            self._queue.append(tx)
        else:
            tx.done = True

    async def write(self) -> None:
        """Write everything queued as one batch. The store unavailable (disk full, server down): the batch
        is held, first in the journal, and written again before anything applied after it, once the store
        is back (``_rewrite_held`` tries while nothing else does); what Core applied stays applied, so the
        store ends as if it had never been away. The batch refused for what it holds: it is rolled back,
        with everything applied after it (which may build on it)."""
        self._writing = True
        group, self._queue = self._queue, []
        landed: list[Tx] = []
        try:
            with instruments.timed(instruments.JOURNAL_COMMIT, instruments.JOURNAL_FAILURES) as commit:
                outcome = commit.outcome = await self._write_with_retries(merge(group))
            if outcome == "rejected" and self._unsure:
                landed = await self._landed(group)
                if landed:
                    log.warning("core_journal_landed_before", transactions=len(landed))
                    group = group[len(landed) :]
                    outcome = await self._write_with_retries(merge(group)) if group else "written"
        except BaseException:
            self._queue[:0] = group
            raise
        finally:
            self._writing = False
        for t in landed:
            t.done, t.ok = True, True
        # held before (their workers moved on) or found in the store: this writer finishes them
        late = [t for t in landed if t.held] + [t for t in group if t.held]
        if outcome == "unavailable":
            self._queue[:0] = group
            late = []
            for t in group:
                if not t.held:
                    t.held, t.done, t.retries = True, True, retry_acks(t)
            log.warning("core_journal_held", transactions=len(self._queue))
            self._held.set()
        elif outcome == "rejected":
            # What was applied after a refused batch may build on it: refused too.
            group, self._queue = group + self._queue, []
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

    async def rewrite_held(self) -> None:
        """Writes a held journal once the store is back, even when no message arrives to do it."""
        while True:
            await self._held.wait()
            while self._queue and self._queue[0].held:
                if self._writing:
                    await self._wrote.wait()
                    continue
                await trio.sleep(self.HELD_RETRY_S)
                if self._queue and self._queue[0].held and not self._writing:
                    await self.write()
            self._held = trio.Event()

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
