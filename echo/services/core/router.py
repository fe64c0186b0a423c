"""Core's router (seed 001): a dispatcher in front of a pool of workers.

The dispatcher takes what the Agents sent, as groups. A message about a trade goes to the worker that
owns that trade (``worker_for``), so one trade's messages are applied in order while other trades go on;
each worker applies what it holds as one group, then waits for the journal and sends. Control traffic
(handshakes, quotes, snapshots, offline) is applied by the dispatcher at once, in arrival order, so a
master's handshake is in force before its first intent is looked at.

Admission: a new trade (an open) is turned away at once with ERR_BROKER_BUSY when its worker holds
``queue_depth_max`` master events, when Core has ``max_in_flight`` commands to connected slaves not yet
answered, or when the oldest message waiting for a worker has waited ``max_behind_ms`` (the bounds past
which it would accept work faster than it delivers it); a modification only by the first bound. The
event is recorded and the master is told RETRY, so it sends it again after its backoff and nothing is
lost. Closes are never turned away (they end work, and they are bounded by the
trades admitted), nor are results and acks from slaves.

The Core's state changes only in synchronous code (trio switches tasks only at ``await``), and the journal
writes transactions in the order they were applied, so workers interleave without locks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
import trio
from opentelemetry import metrics, trace

from echo.domain import messages as m
from echo.domain.config import RouterConfig
from echo.domain.routing import is_master_event, trade_of, worker_for
from echo.ports.transport import CoreHub

log = structlog.get_logger("echo.core.router")
_meter = metrics.get_meter("echo.core.router")
_tracer = trace.get_tracer("echo.core.router")
_COMPONENT = "core.router"

QUEUE_DEPTH = _meter.create_up_down_counter(
    "echo_core_router_queue_depth", description="Messages waiting in a router worker's queue"
)
DISPATCH_TOTAL = _meter.create_counter(
    "echo_core_router_dispatch_total", description="Messages a router worker handled, by result"
)
DISPATCH_DURATION = _meter.create_histogram(
    # no unit: the exporter would append it to the name, and the seed names the metric with its unit
    "echo_core_router_dispatch_duration_ms",
    description="From enqueue to dispatch by a worker, in ms",
)
REJECTIONS_TOTAL = _meter.create_counter(
    "echo_core_router_rejections_total", description="Master events turned away, by reason"
)

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
        n = config.worker_pool_size
        self._queues: list[list[_Queued]] = [[] for _ in range(n)]
        self._masters_waiting = [0] * n
        self._wakeups = [trio.Event() for _ in range(n)]
        self._control_send, self._control_recv = trio.open_memory_channel[Tx](float("inf"))
        self.stats = RouterStats(per_worker=[0] * n)

    async def run(
        self, hub: CoreHub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        log.info(
            "core_router_started",
            worker_pool_size=self.config.worker_pool_size,
            queue_depth_max=self.config.queue_depth_max,
            worker_timeout_ms=self.config.worker_timeout_ms,
        )
        async with trio.open_nursery() as nursery:
            for worker_id in range(self.config.worker_pool_size):
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
        with _tracer.start_as_current_span(
            "core.router.schedule", attributes={"worker_id": worker_id, "trade_id": trade_id}
        ):
            reason = self._refusal(msg, master, depth)
            if reason is not None:
                assert isinstance(msg, m.FromAccount)
                self.stats.rejected_busy += 1
                if reason == "in_flight":
                    self.stats.rejected_in_flight += 1
                elif reason == "behind":
                    self.stats.rejected_behind += 1
                REJECTIONS_TOTAL.add(
                    1, {"worker_id": str(worker_id), "reason": reason, "component": _COMPONENT}
                )
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
                return
            self._queues[worker_id].append(_Queued(agent_id, msg, trade_id, master, now))
            if master:
                self._masters_waiting[worker_id] = depth + 1
            QUEUE_DEPTH.add(1, {"worker_id": str(worker_id), "component": _COMPONENT})
            total = len(self._queues[worker_id])
            self.stats.max_depth = max(self.stats.max_depth, total)
            log.debug("core.router.enqueue", worker_id=worker_id, queue_depth=total, trade_id=trade_id)
            self._wakeups[worker_id].set()

    def behind_s(self) -> float:
        """How long the oldest message waiting for a worker has waited (0.0: none waits): how far Core is
        behind what arrived."""
        oldest = min((q[0].at for q in self._queues if q), default=None)
        return 0.0 if oldest is None else trio.current_time() - oldest

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
            if self._in_flight_now >= self.config.max_in_flight:
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
            now = trio.current_time()
            QUEUE_DEPTH.add(-len(items), labels)
            for q in items:
                DISPATCH_DURATION.record((now - q.at) * 1000.0, {"component": _COMPONENT})
            with _tracer.start_as_current_span(
                "core.router.worker", attributes={"worker_id": worker_id, "messages": len(items)}
            ):
                tx = self._apply([(q.agent_id, q.msg) for q in items])
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
            log.debug("core.router.dispatch", worker_id=worker_id, messages=len(items), result=result)
