"""Delivery lifecycles as pure transition tables (seed 000, plan i17).

Two machines, one shape: a state (frozen dataclass), an input (frozen dataclass), the time as an input,
and ``transition(...) -> (new_state, effects)``. Effects are data the caller carries out: persist the
state, send (again), schedule a retry, report completion. An input that makes no sense in a state is
answered with an ``Invalid`` effect naming both, never an exception, so a confused or malicious peer can
only produce a log line.

**Command** (Core -> slave, one per command_id). Stages follow ``CommandAck``: CORE_ACCEPTED (journaled)
-> AGENT_BUFFERED -> PIPE_DELIVERED -> EA_CONFIRMED, with the outcome PENDING until the slave's result
(OK or FAILED) or until ``max_retries`` sends went unanswered (FAILED, ``gave_up``). Retries re-send the
same command_id: the slave answers a repeated command_id with its original result, so a command whose
reply was lost ("timed out but executed") is never executed twice. Core's sends go to the Agent, which is
the one writer into the terminal (``relay``): a send is a request the Agent writes only when it is not
already waiting on a fresh write of its own, so ``attempt`` here counts Core's sends, and the number on
the pipe is the Agent's (never below Core's).

**Intent** (master -> Core, one per trade_id or close/modify event_id): SENT -> ACKED, re-sent with
backoff until acknowledged. After ``max_retries`` sends it is PAUSED with an alert, never dropped: each
reconnect sends it once more (PROTOCOL.md X10). Only a REJECTED ack ends it unacknowledged (DROPPED).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class Settings:
    """Delivery timing (``[delivery]`` in the configuration; dynamic)."""

    ack_timeout_ms: int = 1000
    retry_backoff_ms: int = 500
    max_retries: int = 100
    max_backoff_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.max_retries < 1 or self.ack_timeout_ms < 1 or self.retry_backoff_ms < 0:
            raise ValueError(f"invalid delivery settings: {self}")

    def retry_delay_ms(self, attempt: int) -> int:
        """Wait after send number ``attempt`` before the next one: the ack timeout plus an exponential
        backoff (``retry_backoff_ms * 2**(attempt-1)``, capped)."""
        backoff = min(self.retry_backoff_ms * (1 << min(max(attempt - 1, 0), 20)), self.max_backoff_ms)
        return self.ack_timeout_ms + backoff


# ------------------------------------------------------------------------------------------------ effects


@dataclass(frozen=True, slots=True)
class Persist:
    """Record the new state (the journal row) before any send that follows."""


@dataclass(frozen=True, slots=True)
class Send:
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryAt:
    at_ms: int


@dataclass(frozen=True, slots=True)
class CancelRetry:
    pass


@dataclass(frozen=True, slots=True)
class Done:
    """The lifecycle ended: ``ok`` for a confirmed success (or an acknowledged intent)."""

    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person must look at (the lifecycle goes on)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    """A legitimate but stale input (a duplicate or late reply): nothing to do, worth a debug line."""

    reason: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """An input that is impossible in this state: a precise description for the log."""

    state: str
    input: str
    reason: str


Effect: TypeAlias = Persist | Send | RetryAt | CancelRetry | Done | Alert | Ignore | Invalid


# ------------------------------------------------------------------------------------------ command machine


class Stage(enum.IntEnum):
    """How far a command got; only moves forward."""

    NEW = 0
    CORE_ACCEPTED = 1
    AGENT_BUFFERED = 2
    PIPE_DELIVERED = 3
    EA_CONFIRMED = 4


class Outcome(enum.Enum):
    PENDING = "PENDING"
    OK = "OK"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Command:
    stage: Stage = Stage.NEW
    outcome: Outcome = Outcome.PENDING
    attempt: int = 0
    """Sends so far."""
    next_retry_at_ms: int | None = None
    last_error: str = ""

    @property
    def finished(self) -> bool:
        return self.outcome is not Outcome.PENDING

    @property
    def gave_up(self) -> bool:
        """Failed without a result: every send went unanswered (a result may still come, late)."""
        return self.outcome is Outcome.FAILED and self.stage < Stage.EA_CONFIRMED


@dataclass(frozen=True, slots=True)
class Journaled:
    """Core recorded the command: it may leave now."""


@dataclass(frozen=True, slots=True)
class AgentBuffered:
    """The Agent queued it for the terminal's connection."""


@dataclass(frozen=True, slots=True)
class PipeDelivered:
    """The terminal acknowledged the line (pipe_delivery_ack OK)."""


@dataclass(frozen=True, slots=True)
class NotDelivered:
    """The Agent could not hand it to the terminal (offline, too slow) or the terminal asked for a retry."""

    reason: str


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The terminal's result for this command_id."""

    success: bool
    error_code: str = "NO_ERROR"


@dataclass(frozen=True, slots=True)
class Timeout:
    """The retry timer fired."""


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The slave's terminal is connected again: what it has not answered goes out now, not at the timer."""


CommandInput: TypeAlias = (
    Journaled | AgentBuffered | PipeDelivered | NotDelivered | Confirmed | Timeout | Reconnected
)
Result: TypeAlias = tuple[Command, list[Effect]]


def _journaled(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # NEW --Journaled--> CORE_ACCEPTED: first send, and a retry timer in case nothing comes back.
    at = now + cfg.retry_delay_ms(1)
    return replace(s, stage=Stage.CORE_ACCEPTED, attempt=1, next_retry_at_ms=at), [
        Persist(),
        Send(1),
        RetryAt(at),
    ]


def _advance(stage: Stage) -> Callable[[Command, CommandInput, int, Settings], Result]:
    # AGENT_BUFFERED: progress only; the retry timer keeps running (each send renews the Agent's hold).
    # PIPE_DELIVERED: the terminal took the line now, so its result gets a whole retry delay from now
    # before Core asks the Agent again.
    def step(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
        if s.stage >= stage:
            return s, [Ignore(f"already at {s.stage.name}")]
        if stage is Stage.PIPE_DELIVERED and s.next_retry_at_ms is not None:
            at = now + cfg.retry_delay_ms(s.attempt)
            if at > s.next_retry_at_ms:
                return replace(s, stage=stage, next_retry_at_ms=at), [Persist(), RetryAt(at)]
        return replace(s, stage=stage), [Persist()]

    return step


def _confirmed(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # Any pending stage --Confirmed--> EA_CONFIRMED with the slave's outcome. Only this ends a command well.
    assert isinstance(i, Confirmed)
    outcome = Outcome.OK if i.success else Outcome.FAILED
    new = replace(
        s,
        stage=Stage.EA_CONFIRMED,
        outcome=outcome,
        next_retry_at_ms=None,
        last_error="" if i.success else i.error_code,
    )
    return new, [Persist(), CancelRetry(), Done(i.success, "confirmed" if i.success else i.error_code)]


def _not_delivered(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The hop below said it could not deliver: try again after the backoff (not at once: the terminal is
    # likely offline), unless the sends are used up.
    assert isinstance(i, NotDelivered)
    return _retry_later(s, now, cfg, i.reason)


def _retry_later(s: Command, now: int, cfg: Settings, reason: str) -> Result:
    if s.attempt >= cfg.max_retries:
        new = replace(s, outcome=Outcome.FAILED, next_retry_at_ms=None, last_error=f"gave up: {reason}")
        return new, [Persist(), CancelRetry(), Done(False, f"gave_up after {s.attempt} sends: {reason}")]
    at = now + cfg.retry_delay_ms(s.attempt)
    return replace(s, next_retry_at_ms=at, last_error=reason), [Persist(), RetryAt(at)]


def _timeout(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The timer fired with no result: re-send the same command_id (attempt + 1), or give up.
    if s.next_retry_at_ms is None or now < s.next_retry_at_ms:
        return s, [Ignore("timer not due")]
    if s.attempt >= cfg.max_retries:
        return _retry_later(s, now, cfg, "no result")
    attempt = s.attempt + 1
    at = now + cfg.retry_delay_ms(attempt)
    new = replace(s, attempt=attempt, next_retry_at_ms=at, last_error="no result before the ack timeout")
    return new, [Persist(), Send(attempt), RetryAt(at)]


def _reconnected(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The path to the terminal is back: re-send now (the earlier send may have died with the connection).
    if s.attempt >= cfg.max_retries:
        return _retry_later(s, now, cfg, "no result")
    attempt = s.attempt + 1
    at = now + cfg.retry_delay_ms(attempt)
    new = replace(
        s, attempt=attempt, next_retry_at_ms=at, last_error="re-sent after the terminal reconnected"
    )
    return new, [Persist(), Send(attempt), RetryAt(at)]


def _late(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # A finished command hears more: duplicate results, late acks, a stale timer. Nothing changes.
    return s, [Ignore(f"{type(i).__name__} after {s.outcome.value}")]


_Handler: TypeAlias = Callable[[Command, CommandInput, int, Settings], Result]

COMMAND_TABLE: dict[tuple[bool, type], _Handler] = {
    # (started?, input) -> handler.  "started" = the command was journaled (stage >= CORE_ACCEPTED).
    (False, Journaled): _journaled,
    (True, AgentBuffered): _advance(Stage.AGENT_BUFFERED),
    (True, PipeDelivered): _advance(Stage.PIPE_DELIVERED),
    (True, NotDelivered): _not_delivered,
    (True, Confirmed): _confirmed,
    (True, Timeout): _timeout,
    (True, Reconnected): _reconnected,
}
"""Rules for a pending command. A finished command ignores everything (``_late``). Missing pairs are
impossible inputs: a result for a command that was never journaled, a second Journaled."""


def _confirmed_after_give_up(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # FAILED (gave up, never confirmed) --Confirmed--> EA_CONFIRMED: "timed out but executed". What the
    # terminal did is the truth: recorded, and flagged, but no second Done.
    assert isinstance(i, Confirmed)
    outcome = Outcome.OK if i.success else Outcome.FAILED
    new = replace(
        s,
        stage=Stage.EA_CONFIRMED,
        outcome=outcome,
        next_retry_at_ms=None,
        last_error="" if i.success else i.error_code,
    )
    return new, [Persist(), Alert(f"result after giving up: {outcome.value}")]


def command_transition(state: Command, event: CommandInput, now_ms: int, settings: Settings) -> Result:
    if state.outcome is Outcome.FAILED and state.stage < Stage.EA_CONFIRMED and isinstance(event, Confirmed):
        return _confirmed_after_give_up(state, event, now_ms, settings)
    if state.finished:
        return _late(state, event, now_ms, settings)
    handler = COMMAND_TABLE.get((state.stage >= Stage.CORE_ACCEPTED, type(event)))
    if handler is None:
        return state, [
            Invalid(state.stage.name, type(event).__name__, "no rule for this input in this stage")
        ]
    return handler(state, event, now_ms, settings)


# ------------------------------------------------------------------------------------------- intent machine


class IntentStatus(enum.Enum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    PAUSED = "PAUSED"
    """``max_retries`` sends went unacknowledged: waiting for a reconnect to try again."""
    ACKED = "ACKED"
    DROPPED = "DROPPED"
    """Refused by Core (REJECTED)."""


@dataclass(frozen=True, slots=True)
class Intent:
    status: IntentStatus = IntentStatus.QUEUED
    attempt: int = 0
    next_retry_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    """The master's connection is up (after a handshake): queued or unacknowledged intents go out."""


@dataclass(frozen=True, slots=True)
class Acked:
    """trade_intent_ack for this intent. OK and DUPLICATE end it; RETRY asks for another send after
    ``retry_backoff_ms``; REJECTED ends it as refused."""

    status: str


IntentInput: TypeAlias = Connected | Acked | Timeout
IntentResult: TypeAlias = tuple[Intent, list[Effect]]


def _send_intent(s: Intent, now: int, cfg: Settings, *, reconnected: bool = False) -> IntentResult:
    if s.attempt >= cfg.max_retries and not reconnected:
        return replace(s, status=IntentStatus.PAUSED, next_retry_at_ms=None), [
            Persist(),
            CancelRetry(),
            Alert(f"no ack after {s.attempt} sends; trying again at the next reconnect"),
        ]
    attempt = s.attempt + 1
    at = now + cfg.retry_delay_ms(attempt)
    return replace(s, status=IntentStatus.SENT, attempt=attempt, next_retry_at_ms=at), [
        Persist(),
        Send(attempt),
        RetryAt(at),
    ]


def intent_transition(state: Intent, event: IntentInput, now_ms: int, settings: Settings) -> IntentResult:
    if state.status in (IntentStatus.ACKED, IntentStatus.DROPPED):
        return state, [Ignore(f"{type(event).__name__} after {state.status.value}")]
    if isinstance(event, Connected):
        # QUEUED, SENT or PAUSED: (re)send now; a reconnect means the earlier send may be lost
        return _send_intent(state, now_ms, settings, reconnected=True)
    if isinstance(event, Acked):
        if state.status is IntentStatus.QUEUED:
            return state, [Invalid(state.status.value, "Acked", "an ack for an intent that was never sent")]
        if event.status in ("OK", "DUPLICATE"):
            return replace(state, status=IntentStatus.ACKED, next_retry_at_ms=None), [
                Persist(),
                CancelRetry(),
                Done(True, event.status),
            ]
        if event.status == "REJECTED":
            return replace(state, status=IntentStatus.DROPPED, next_retry_at_ms=None), [
                Persist(),
                CancelRetry(),
                Done(False, "rejected"),
            ]
        if event.status == "RETRY" and state.status is IntentStatus.PAUSED:
            return state, [Ignore("RETRY while paused; waiting for a reconnect")]
        if event.status == "RETRY":
            # Core asks for the line again later: after retry_backoff_ms (PROTOCOL.md X9)
            at = now_ms + settings.retry_backoff_ms
            return replace(state, next_retry_at_ms=at), [Persist(), RetryAt(at)]
        return state, [Invalid(state.status.value, f"Acked({event.status})", "unknown ack status")]
    # Timeout
    if (
        state.status in (IntentStatus.QUEUED, IntentStatus.PAUSED)
        or state.next_retry_at_ms is None
        or now_ms < state.next_retry_at_ms
    ):
        return state, [Ignore("timer not due")]
    return _send_intent(state, now_ms, settings)
