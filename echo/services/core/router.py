"""Core's router (seed 001): a dispatcher in front of a pool of workers.

The dispatcher takes what the Agents sent, as groups. A message about a trade goes to the worker that
owns that trade (``worker_for``), so one trade's messages are applied in order while other trades go on;
each worker applies what it holds as one group, then waits for the journal and sends. Control traffic
(handshakes, quotes, snapshots, offline) is applied by the dispatcher at once, in arrival order, so a
master's handshake is in force before its first intent is looked at.

Admission: a new trade (an open) is turned away at once with ERR_BROKER_BUSY when its worker holds
``queue_depth_max`` master events, when Core has ``max_in_flight`` commands to connected slaves not yet
answered (an open admitted and not yet applied counts as one), or when the oldest message waiting for a
worker has waited ``max_behind_ms`` (the bounds past which it would accept work faster than it delivers
it); a modification only by the first bound. In split mode the last bound also counts what waits in the
gRPC hub: answers that arrived and were not read yet, and messages to an Agent not written to its stream
yet (``GrpcCoreHub.behind_s``). The event is recorded and the master is told RETRY, so it sends it again
after its backoff and nothing is lost. Closes are never turned away (they end work, and they are bounded
by the trades admitted), nor are results and acks from slaves.

The Core's state changes only in synchronous code (trio switches tasks only at ``await``), and the journal
writes transactions in the order they were applied, so workers interleave without locks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
import trio

from echo.domain import messages as m
from echo.domain.config import RouterConfig
from echo.domain.routing import is_master_event, trade_of, worker_for
from echo.ports.transport import CoreHub
from echo.services import instruments, tracing
from echo.services.tracing import Span

log = structlog.get_logger("echo.core.router")
_COMPONENT = "core.router"

# the router's metrics are declared with every other in echo/services/instruments.py
QUEUE_DEPTH = instruments.ROUTER_QUEUE_DEPTH
DISPATCH_TOTAL = instruments.ROUTER_DISPATCH
DISPATCH_DURATION = instruments.ROUTER_DISPATCH_DURATION
REJECTIONS_TOTAL = instruments.ROUTER_REJECTIONS


def _handle_span(msg: m.AgentToCore, worker_id: int) -> Span | None:
    """Core's span for a master's event, from its arrival until what it caused is sent, under the Agent's
    span for it (the traceparent it came with) in the trace of its trade. (A slave's result is an event of
    the Agent's span of its command, not a span of Core's: a fan-out costs no span per slave here.)"""
    if not isinstance(msg, m.FromAccount):
        return None
    trace_id = getattr(msg.message, "trace_id", None)
    if trace_id is None:
        return None
    span = tracing.start(
        "core.handle",
        trace_id,
        traceparent=msg.traceparent,
        attributes={"worker_id": worker_id, "message": type(msg.message).__name__},
    )
    return span if span.is_recording() else None  # a trade outside the sample costs nothing further


def _traced_group(items: list[_Queued]) -> tracing.Group | None:
    """The group's messages with a span of Core's, by trace; each waited in its queue until now."""
    group = tracing.Group()
    now = time.time_ns()
    for q in items:
        if q.span is not None and isinstance(q.msg, m.FromAccount):
            trace_id = getattr(q.msg.message, "trace_id", "")
            group.spans.setdefault(trace_id, []).append(q.span)
            group.waits.append((q.span, q.span_ns, now))
    return group if group.spans else None


def _is_open(msg: m.AgentToCore) -> bool:
    return isinstance(msg, m.FromAccount) and isinstance(msg.message, m.TradeIntent)


Tx = TypeVar("Tx")
Item = tuple[str, m.AgentToCore]


@dataclass
class RouterStats:
    """Counters a user (and the demo summary) can read without a metrics backend."""

    dispatched: int = 0
    rejected_busy: int = 0
    control: int = 0
    max_depth: int = 0
    per_worker: list[int] = field(default_factory=list)
    rejected_in_flight: int = 0
    """Of ``rejected_busy``: opens turned away past ``max_in_flight``."""
    rejected_behind: int = 0
    """Of ``rejected_busy``: opens turned away while Core was ``max_behind_ms`` behind."""


@dataclass
class _Queued:
    agent_id: str
    msg: m.AgentToCore
    trade_id: str
    master_event: bool
    at: float
    span: Span | None = None
    """Core's span for this message in its trade's trace (traces on only)."""
    span_ns: int = 0


class Router(Generic[Tx]):
    """``apply`` changes Core's state for a group of messages and returns its transaction (already queued
    for the journal); ``finish`` waits for the journal and sends; ``reject_busy`` turns one master event
    away; ``trade_of_command`` names the trade of a command (for the Agent's CommandAcks)."""

    GROUP_LIMIT = 256

    def __init__(
        self,
        config: RouterConfig,
        *,
        apply: Callable[[list[Item]], Tx],
        finish: Callable[[Tx], Awaitable[None]],
        reject_busy: Callable[[str, m.AgentToCore, int, int], Tx],
        trade_of_command: Callable[[str], str | None],
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.config = config
        self._apply, self._finish, self._reject = apply, finish, reject_busy
        self._trade_of_command = trade_of_command
        self._in_flight = in_flight
        self._in_flight_now: int | None = None
        """Core's in-flight count, computed once per dispatched group (only when an open asks)."""
        self._opens_waiting = 0
        """Opens admitted and not yet applied by their worker: each will send at least one command, so
        each counts as one in flight (a burst that arrives as one group is not admitted whole)."""
        n = config.worker_pool_size
        self._queues: list[list[_Queued]] = [[] for _ in range(n)]
        self._masters_waiting = [0] * n
        self._wakeups = [trio.Event() for _ in range(n)]
        self._control_send, self._control_recv = trio.open_memory_channel[Tx](float("inf"))
        self.stats = RouterStats(per_worker=[0] * n)
        self._hub_behind: Callable[[str | None], float] | None = None
        """The hub's own backlog, when it keeps one (``GrpcCoreHub.behind_s``): what waits in it to be read
        by Core or written to an Agent."""

    async def run(
        self, hub: CoreHub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        log.info(
            "core_router_started",
            worker_pool_size=self.config.worker_pool_size,
            queue_depth_max=self.config.queue_depth_max,
            worker_timeout_ms=self.config.worker_timeout_ms,
        )
        self._hub_behind = getattr(hub, "behind_s", None)
        async with trio.open_nursery() as nursery:
            for worker_id in range(self.config.worker_pool_size):
                labels = {"worker_id": str(worker_id), "reason": "queue_full", "component": _COMPONENT}
                REJECTIONS_TOTAL.add(0, labels)  # the series exists before the first rejection
                nursery.start_soon(self._worker, worker_id)
            nursery.start_soon(self._control)
            task_status.started()
            while True:
                self.dispatch(await hub.receive_many(self.GROUP_LIMIT))

    def key(self, msg: m.AgentToCore) -> str | None:
        trade_id = trade_of(msg)
        if trade_id is None and isinstance(msg, m.CommandAck):
            trade_id = self._trade_of_command(msg.command_id)
        return trade_id

    def dispatch(self, group: list[Item]) -> None:
        """Route one group (synchronously: nothing else runs meanwhile). Consecutive control messages are
        applied together as one transaction."""
        control: list[Item] = []
        now = trio.current_time()
        self._in_flight_now = None
        for agent_id, msg in group:
            trade_id = self.key(msg)
            if trade_id is None:
                control.append((agent_id, msg))
                continue
            if control:
                self._control_now(control)
                control = []
            self._schedule(agent_id, msg, trade_id, now)
        if control:
            self._control_now(control)

    def _control_now(self, items: list[Item]) -> None:
        self.stats.control += len(items)
        self._control_send.send_nowait(self._apply(items))

    def _schedule(self, agent_id: str, msg: m.AgentToCore, trade_id: str, now: float) -> None:
        worker_id = worker_for(trade_id, self.config.worker_pool_size)
        master = is_master_event(msg)
        depth = self._masters_waiting[worker_id]
        span = _handle_span(msg, worker_id) if tracing.ON and master else None
        span_ns = time.time_ns() if span is not None else 0
        reason = self._refusal(msg, master, depth)
        if reason is not None:
            assert isinstance(msg, m.FromAccount)
            self.stats.rejected_busy += 1
            if reason == "in_flight":
                self.stats.rejected_in_flight += 1
            elif reason == "behind":
                self.stats.rejected_behind += 1
            REJECTIONS_TOTAL.add(1, {"worker_id": str(worker_id), "reason": reason, "component": _COMPONENT})
            log.warning(
                "core.router.enqueue",
                backpressure=True,
                reason=reason,
                worker_id=worker_id,
                queue_depth=depth,
                in_flight=self._in_flight_now,
                trade_id=trade_id,
            )
            self._control_send.send_nowait(self._reject(agent_id, msg, worker_id, depth))
            if span is not None:
                span.set_attribute("rejected", reason)
                span.end()
            return
        self._queues[worker_id].append(_Queued(agent_id, msg, trade_id, master, now, span, span_ns))
        if master:
            self._masters_waiting[worker_id] = depth + 1
            if _is_open(msg):
                self._opens_waiting += 1
        QUEUE_DEPTH.add(1, {"worker_id": str(worker_id), "component": _COMPONENT})
        total = len(self._queues[worker_id])
        self.stats.max_depth = max(self.stats.max_depth, total)
        log.debug("core.router.enqueue", worker_id=worker_id, queue_depth=total, trade_id=trade_id)
        self._wakeups[worker_id].set()

    def behind_s(self, agent_id: str | None = None) -> float:
        """How long the oldest message waiting for a worker has waited (0.0: none waits): how far Core is
        behind what arrived. With a hub that queues on its own (split mode), also how long the oldest
        message waiting in it has waited: an answer not read yet, or a message to ``agent_id`` (to any
        Agent when None) not written yet."""
        oldest = min((q[0].at for q in self._queues if q), default=None)
        own = 0.0 if oldest is None else trio.current_time() - oldest
        if self._hub_behind is None:
            return own
        return max(own, self._hub_behind(agent_id))

    def _refusal(self, msg: m.AgentToCore, master: bool, depth: int) -> str | None:
        """Why a message is turned away (``queue_full``, ``in_flight``, ``behind``), or None to admit
        it."""
        if not master or not isinstance(msg, m.FromAccount) or isinstance(msg.message, m.TradeClose):
            return None
        if depth >= self.config.queue_depth_max:
            return "queue_full"
        if isinstance(msg.message, m.TradeIntent):
            if self._in_flight_now is None:
                self._in_flight_now = self._in_flight()
            if self._in_flight_now + self._opens_waiting >= self.config.max_in_flight:
                return "in_flight"
            if self.behind_s() * 1000.0 >= self.config.max_behind_ms:
                return "behind"
        return None

    async def _control(self) -> None:
        """Control transactions (and busy rejections) finish in the order they were applied."""
        async for tx in self._control_recv:
            await self._finish(tx)

    async def _worker(self, worker_id: int) -> None:
        labels = {"worker_id": str(worker_id), "component": _COMPONENT}
        while True:
            while not self._queues[worker_id]:
                await self._wakeups[worker_id].wait()
                self._wakeups[worker_id] = trio.Event()
            items, self._queues[worker_id] = self._queues[worker_id], []
            self._masters_waiting[worker_id] = 0
            self._opens_waiting -= sum(1 for q in items if _is_open(q.msg))
            now = trio.current_time()
            QUEUE_DEPTH.add(-len(items), labels)
            for q in items:
                DISPATCH_DURATION.record((now - q.at) * 1000.0, {"component": _COMPONENT})
            group = _traced_group(items) if tracing.ON else None
            token = tracing.GROUP.set(group) if group is not None else None
            applied_ns = time.time_ns() if group is not None else 0
            tx = self._apply([(q.agent_id, q.msg) for q in items])
            if group is not None:
                tracing.step("core.engine.apply", applied_ns, time.time_ns())
            result = "ok"
            try:
                await self._finish(tx)
            except Exception:
                result = "error"
                raise
            finally:
                self.stats.dispatched += len(items)
                self.stats.per_worker[worker_id] += len(items)
                DISPATCH_TOTAL.add(len(items), {**labels, "result": result})
                if token is not None:
                    tracing.GROUP.reset(token)
                if group is not None:
                    group.close()
            log.debug("core.router.dispatch", worker_id=worker_id, messages=len(items), result=result)
