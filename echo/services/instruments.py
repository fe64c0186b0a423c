"""Every metric the copier exports, in one place (opentelemetry-api only).

The names are Prometheus names with their unit (``_ms``, ``_points``, ``_seconds``); counters get the
``_total`` suffix from the exporter. Labels stay bounded: account, symbol, reason, kind, stage, never a
trade or command id. Counters are ``Tally``s: summed in a dict and read by the SDK on each scrape (the
SDK's own measurement path costs 10-40 us an add). Histograms are ``Spread``s: bucket counts and a sum
kept in a dict per label set (a bisect into fixed bounds, a couple of microseconds), served beside the
SDK's reader by echo/adapters/metrics.py in the same text format. Both do nothing until a meter provider
is installed (``metrics.listen`` empty).

The functions below are what the engine and the shells call where a fact is decided; each is one line
at the call site. They are synchronous and trio-free, so Core's engine may call them."""

from __future__ import annotations

import os
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics
from opentelemetry.environment_variables import OTEL_PYTHON_METER_PROVIDER
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.metrics import _internal as _api
from opentelemetry.metrics._internal import _ProxyMeterProvider  # the API's stand-in until one is set

_meter = metrics.get_meter("echo")

MS_BUCKETS: tuple[float, ...] = (
    *(0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500),
    *(1000, 2500, 5000, 10000, 30000, 60000),
)
"""Bucket bounds of the ``_ms`` histograms. Copy latencies: a local hop takes well under a millisecond, a
copy to a broker tens to hundreds."""
POINTS_BUCKETS: tuple[float, ...] = (0, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
"""Bucket bounds of the ``_points`` histograms: slippage and spread in points (a point: the symbol's
smallest price step)."""


_PROVIDER_IN_ENVIRONMENT = OTEL_PYTHON_METER_PROVIDER in os.environ


def _served() -> bool:
    """Whether a meter provider is installed in this process (remembered once it is)."""
    if not Tally.served:
        # Until one is installed this runs on every add: the API's global is read first, since
        # ``get_meter_provider`` looks the environment up on each call (a provider named there is
        # loaded by the first call, as before).
        if _api._METER_PROVIDER is None and not _PROVIDER_IN_ENVIRONMENT:
            return False
        if isinstance(metrics.get_meter_provider(), _ProxyMeterProvider):
            return False
        Tally.served = True
    return True


class Tally:
    """A monotonic counter kept in a dict (labels -> total) and reported as an OpenTelemetry observable
    counter: ``add`` is a dict update (about a microsecond; nothing without a provider), the scrape reads
    a copy (``dict.items`` copied in one C call, atomic under the GIL, so the HTTP thread may read while the
    event loop's thread adds). The label sets are bounded, so is the dict. ``monotonic=False``: an up-down
    counter (a queue's depth)."""

    __slots__ = ("name", "values")

    served = False
    """Whether a meter provider is installed in this process (checked by ``add`` until one is): until
    then ``add`` does nothing."""

    def __init__(self, name: str, description: str, *, monotonic: bool = True) -> None:
        self.name = name
        self.values: dict[tuple[tuple[str, str], ...], float] = {}
        create = _meter.create_observable_counter if monotonic else _meter.create_observable_up_down_counter
        create(name, callbacks=[self._observe], description=description)

    def add(self, amount: float, attributes: dict[str, str] | None = None) -> None:
        if not Tally.served and not _served():
            return
        key = tuple(sorted(attributes.items())) if attributes else ()
        self.values[key] = self.values.get(key, 0) + amount

    def _observe(self, _options: CallbackOptions) -> Iterator[Observation]:
        for key, value in list(self.values.items()):
            yield Observation(value, dict(key))


Labels = tuple[tuple[str, str], ...]

SPREADS: list[Spread] = []
"""Every histogram declared, for the exporter to read on each scrape."""


class Spread:
    """A histogram with fixed bucket bounds, kept in a dict: label set -> [count per bucket (one per bound,
    then +Inf), sum]. A value lands in the first bucket whose bound is >= the value (Prometheus's ``le``,
    OpenTelemetry's explicit buckets). ``record`` is a bisect and two additions (nothing without a meter
    provider); the bounds follow the name's unit (``_ms``, ``_points``), as the SDK's views had them. The
    scrape copies each cell in one C call (``snapshot``), so the HTTP thread may read while the event loop
    records; the label sets are bounded, so is the dict."""

    __slots__ = ("bounds", "description", "name", "values")

    def __init__(self, name: str, description: str, bounds: tuple[float, ...] | None = None) -> None:
        if bounds is None:
            units = {"_ms": MS_BUCKETS, "_points": POINTS_BUCKETS}
            unit = next((u for u in units if name.endswith(u)), None)
            if unit is None:
                raise ValueError(f"{name}: no bounds, and no unit (_ms, _points) to take them from")
            bounds = units[unit]
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: bucket bounds must increase: {bounds}")
        self.name, self.description, self.bounds = name, description, bounds
        self.values: dict[Labels, list[float]] = {}
        SPREADS.append(self)

    def record(self, amount: float, attributes: dict[str, str] | None = None) -> None:
        if not Tally.served and not _served():
            return
        key = tuple(sorted(attributes.items())) if attributes else ()
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = [0.0] * (len(self.bounds) + 2)
        cell[bisect_left(self.bounds, amount)] += 1
        cell[-1] += amount

    def snapshot(self) -> list[tuple[Labels, list[float]]]:
        """(labels, [count per bucket (+Inf last), sum]) for each label set recorded, copied."""
        return [(key, list(cell)) for key, cell in list(self.values.items())]


# ------------------------------------------------------------------------------------------ Core: router

ROUTER_QUEUE_DEPTH = Tally(
    "echo_core_router_queue_depth", "Messages waiting in a router worker's queue", monotonic=False
)
ROUTER_DISPATCH = Tally("echo_core_router_dispatch_total", "Messages a router worker handled, by result")
ROUTER_DISPATCH_DURATION = Spread(
    "echo_core_router_dispatch_duration_ms", "From enqueue to dispatch by a worker, in ms"
)
ROUTER_REJECTIONS = Tally("echo_core_router_rejections_total", "Master events turned away, by reason")

# ------------------------------------------------------------------------------------------ Core: copies

COPY_LATENCY = Spread("echo_core_copy_latency_ms", "The master's open to the slave's fill at Core, ms")
APPLY_DURATION = Spread("echo_core_apply_duration_ms", "Core applying one group of messages (engine), ms")
JOURNAL_COMMIT = Spread(
    "echo_core_journal_commit_duration_ms", "One group commit to the store, by outcome, ms"
)
JOURNAL_FAILURES = Tally(
    "echo_core_journal_failures", description="Group commits that failed, by outcome (unavailable, rejected)"
)
EVENTS = Tally("echo_core_journal_events", description="Event rows Core recorded, by kind")
COPIES = Tally("echo_core_copies", description="Copies filled at a slave, by account and symbol")
OMISSIONS = Tally(
    "echo_core_omissions", description="Copies not made, by account and reason (policy, window, offline...)"
)
MISSED_TRADES = Tally(
    "echo_core_missed_trades",
    description="Master trades a slave did not get (not by a rule: offline, REJECTED, refused, given up)",
)
SLIPPAGE = Spread("echo_core_slippage_points", "Slave fill price against the master's, in points")
SPREAD_AT_ENTRY = Spread(
    "echo_core_spread_at_entry_points", "Slave spread when the copy was decided, in points"
)
ORDERS_REJECTED = Tally(
    "echo_core_orders_rejected", description="Orders a slave's broker (or EA) refused, by reason"
)
BLOCKED_BY_WINDOW = Tally(
    "echo_core_blocked_by_window", description="Entries blocked by a no-trade window, by account"
)
POLICY_VIOLATIONS = Tally(
    "echo_core_policy_violations",
    description="Entries a policy limit refused (spread, slippage, delay, size), by account and policy",
)
STOP_OUTS = Tally("echo_core_stop_outs", description="Slave positions stopped out")
BROKER_CLOSES = Tally(
    "echo_core_broker_closes", description="Slave positions the broker closed (SL, TP, stop-out), by reason"
)
GAVE_UP = Tally(
    "echo_core_delivery_gave_up", description="Commands given up after every send, by account and kind"
)
DELIVERY_RETRIES = Tally(
    "echo_core_delivery_retries", description="Delivery steps reported for commands, by stage and result"
)
HANDSHAKES = Tally("echo_core_handshakes", description="Handshake verdicts, by account and status")
HANDSHAKE_FEEDBACK = Spread(
    "echo_core_handshake_feedback_ms", "Handshake received by the Agent to Core's verdict, ms"
)
COMPAT_MODE = Tally(
    "echo_core_compat_mode_streams", description="Agent streams served in compat mode (no lossless delivery)"
)
SHED = Tally(
    "echo_core_quotes_shed", description="Quotes and snapshots dropped at Core's gRPC stream, by reason"
)

# --------------------------------------------------------------------------------------------- Agent

PIPE_LATENCY = Spread(
    "echo_agent_pipe_delivery_latency_ms",
    "Agent write of a command to the terminal's acknowledgement, by result, ms",
)
PIPE_REWRITES = Tally(
    "echo_agent_pipe_rewrites", description="Commands written again to a terminal, by account"
)
PIPE_RETRIES = Tally(
    "echo_agent_pipe_retries", description="Delivery outcomes the Agent reported to Core, by stage and result"
)

# --------------------------------------------------------------------------------------------- hooks

_POLICY = {
    "spread_too_wide": "max_spread",
    "slippage_too_high": "max_slippage",
    "ERR_SPREAD_TOO_WIDE": "max_spread",
    "ERR_SLIPPAGE_TOO_HIGH": "max_slippage",
    "max_delay_exceeded": "max_delay",
    "no_stop_loss": "require_stop_loss",
    "lot_below_min_lot": "min_lot",
}
"""Omission reasons that are a policy limit at work (omitted by the operator's rule: not a missed trade)."""


class timed:
    """Record the block's duration in ms on ``histogram``, with ``outcome`` as a label once the block
    sets it; an outcome other than ``written`` also counts on ``failures``."""

    __slots__ = ("failures", "histogram", "outcome", "t0")

    def __init__(self, histogram: Spread, failures: Tally | None = None) -> None:
        self.histogram, self.failures = histogram, failures
        self.outcome: str | None = None
        self.t0 = 0.0

    def __enter__(self) -> timed:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        ms = (time.perf_counter() - self.t0) * 1000.0
        if self.outcome is None:
            self.histogram.record(ms)
            return
        self.histogram.record(ms, {"outcome": self.outcome})
        if self.failures is not None and self.outcome != "written":
            self.failures.add(1, {"outcome": self.outcome})


def pipe_acked(held: Any, status: str, now_ms: int) -> None:
    """The terminal acknowledged the write of ``held`` (the Agent's Held; ``status``: OK, RETRY, FAILED)."""
    written = held.state.written_at_ms
    if written is not None:
        PIPE_LATENCY.record(max(now_ms - written, 0), {"account": held.account_id, "result": status})


def event(kind: str) -> None:
    """Tx.record: one event row of ``kind``."""
    EVENTS.add(1, {"kind": kind})


def omitted(account: str, reason: str) -> None:
    """A copy not made. A window or a policy limit is the operator's rule; any other reason (the slave
    offline or REJECTED, no quote, a symbol it cannot trade) is a missed trade."""
    OMISSIONS.add(1, {"account": account, "reason": reason})
    if reason == "no_trade_window":
        BLOCKED_BY_WINDOW.add(1, {"account": account})
    elif reason in _POLICY:
        POLICY_VIOLATIONS.add(1, {"account": account, "policy": _POLICY[reason]})
    else:
        MISSED_TRADES.add(1, {"account": account})


def copy_decided(account: str, symbol: str, detail: dict[str, object]) -> None:
    spread = detail.get("spread_points")
    if isinstance(spread, int | float):
        SPREAD_AT_ENTRY.record(float(spread), {"account": account, "symbol": symbol})


def filled(acc: Any, trade: Any, symbol: str, price: float | None, now_ms: int) -> None:
    """A copy filled at slave ``acc`` (Core's Account) for ``trade`` (Core's Trade, or None): counted, its
    latency from the master's open, and its slippage against the master's price in the slave's points."""
    account = acc.account_id
    labels = {"account": account, "symbol": symbol}
    COPIES.add(1, labels)
    if trade is None:
        return
    intent = trade.intent
    opened = intent.opened_at_ms if intent.opened_at_ms is not None else trade.row.opened_at_ms
    COPY_LATENCY.record(max(now_ms - opened, 0), {"account": account})
    spec = acc.symbols.get(trade.canonical)
    if price and spec is not None and spec.point > 0:
        SLIPPAGE.record(abs(price - intent.price) / spec.point, labels)


def rejected(account: str, reason: str, opening: bool) -> None:
    """A failed result: the broker (or the EA's own live check) refused the order."""
    ORDERS_REJECTED.add(1, {"account": account, "reason": reason})
    if opening:
        MISSED_TRADES.add(1, {"account": account})


def gave_up(account: str, kind: str) -> None:
    GAVE_UP.add(1, {"account": account, "kind": kind})
    if kind == "execute":
        MISSED_TRADES.add(1, {"account": account})


def broker_closed(account: str, reason: str) -> None:
    BROKER_CLOSES.add(1, {"account": account, "reason": reason})
    if reason == "STOP_OUT":
        STOP_OUTS.add(1, {"account": account})


def handshake(account: str, status: str, feedback_ms: float) -> None:
    """Core's verdict on an account's handshake. The account's alerting counters start at 0 here, so
    Prometheus sees their first increase (a series born at 1 shows none) and the rules find the series."""
    HANDSHAKES.add(1, {"account": account, "status": status})
    HANDSHAKE_FEEDBACK.record(max(feedback_ms, 0.0))
    labels = {"account": account}
    STOP_OUTS.add(0, labels)
    MISSED_TRADES.add(0, labels)
    for kind in ("execute", "close", "modify"):
        GAVE_UP.add(0, {**labels, "kind": kind})


def terminal_connected(account: str) -> None:
    """A terminal's handshake taken by its Agent: the account's re-write counter starts at 0."""
    PIPE_REWRITES.add(0, {"account": account})


def core_started(core: Any) -> None:
    """A Core runs in this process: its gauges are read on each scrape, its journal counters start at 0."""
    observe(core, core_gauges)
    for outcome in ("unavailable", "rejected"):
        JOURNAL_FAILURES.add(0, {"outcome": outcome})


def delivery_ack(stage: str, result: str) -> None:
    DELIVERY_RETRIES.add(1, {"stage": stage, "result": result})


# ------------------------------------------------------------------------------------- observed state

_LIVE: weakref.WeakKeyDictionary[Any, Callable[[Any], Iterable[tuple[str, float, dict[str, str]]]]] = (
    weakref.WeakKeyDictionary()
)
"""Objects (Cores, Agents) and how to read their gauges: (name, value, labels), on each scrape."""


def observe(source: Any, gauges: Callable[[Any], Iterable[tuple[str, float, dict[str, str]]]]) -> None:
    """Report ``gauges(source)`` on every scrape while ``source`` lives."""
    _LIVE[source] = gauges


def _gauge(name: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
    def callback(_options: CallbackOptions) -> Iterator[Observation]:
        for source, gauges in list(_LIVE.items()):
            for n, value, labels in gauges(source):
                if n == name:
                    yield Observation(value, labels)

    return callback


def _uuid7_ms(uuid: str) -> int:
    return int(uuid.replace("-", "")[:12], 16)


def core_gauges(core: Any) -> Iterator[tuple[str, float, dict[str, str]]]:
    """A Core's accounts and pending commands. Read from the HTTP server's thread while Core runs: each
    container is copied in one C call (atomic under the GIL) before it is walked."""
    ctx = core.ctx
    st = ctx.state
    for acc in list(st.accounts.values()):
        a = acc.account_id
        yield "echo_core_account_online", 1.0 if acc.online else 0.0, {"account": a, "role": acc.role.value}
        for status in ("ACCEPTED", "WARNING", "REJECTED"):
            on = 1.0 if acc.registration.value == status else 0.0
            yield "echo_core_account_handshake_status", on, {"account": a, "status": status}
        yield "echo_core_account_degraded_symbols", float(len(acc.rejected_symbols)), {"account": a}
    now = ctx.clock.now_ms()
    oldest: dict[str, int] = {}
    pending = list(st.pending.values())
    for pend in pending:
        made = _uuid7_ms(pend.command.command_id)
        oldest[pend.account_id] = min(oldest.get(pend.account_id, made), made)
    yield "echo_core_pending_commands", float(len(pending)), {}
    for a in list(st.accounts):
        age = (now - oldest[a]) / 1000.0 if a in oldest else 0.0
        yield "echo_core_pending_command_age_seconds", max(age, 0.0), {"account": a}


def agent_gauges(agent: Any) -> Iterator[tuple[str, float, dict[str, str]]]:
    """An Agent's terminals and held commands."""
    labels = {"agent": agent.agent_id}
    yield "echo_agent_terminals_connected", float(len(agent.connections)), labels
    yield "echo_agent_held_commands", float(len(agent.held)), labels
    yield "echo_agent_compat_mode", 1.0 if getattr(agent._link, "compat_mode", False) else 0.0, labels


GAUGES = {
    "echo_core_account_online": "1 when the account's terminal is connected, by account and role",
    "echo_core_account_handshake_status": "1 for the account's current handshake verdict (status label)",
    "echo_core_account_degraded_symbols": "Symbols the account may not trade after its handshake",
    "echo_core_pending_commands": "Commands waiting for their result",
    "echo_core_pending_command_age_seconds": "Age of the oldest command waiting for its result, by account",
    "echo_agent_terminals_connected": "Terminals connected to this Agent",
    "echo_agent_held_commands": "Commands the Agent is getting into its terminals",
    "echo_agent_compat_mode": "1 when the Agent's link to Core runs in compat mode",
}
for _name, _doc in GAUGES.items():
    _meter.create_observable_gauge(_name, callbacks=[_gauge(_name)], description=_doc)
