"""The command lifecycle (Core -> slave) as one pure transition table, ``COMMAND_RULES`` (seed 000, plan
i17). The intent lifecycle is ``intent.py``; the shared settings and effects are ``effects.py`` (both
re-exported here).

Both machines have one shape: a state (frozen dataclass), an input (frozen dataclass), the time as an input,
and ``transition(...) -> (new_state, effects)``. Effects are data the caller carries out: persist the
state, send (again), schedule a retry, report completion. An input that makes no sense in a state is
answered with an ``Invalid`` effect naming both, never an exception, so a confused or malicious peer can
only produce a log line.

**Command** (Core -> slave, one per command_id). Stages follow ``CommandAck``: CORE_ACCEPTED (journaled;
``Sent`` when the send actually left Core, which restarts the wait for an answer) -> AGENT_BUFFERED ->
PIPE_DELIVERED -> EA_CONFIRMED, with the outcome PENDING until the slave's result
(OK or FAILED) or until ``max_retries`` sends went unanswered (FAILED, ``gave_up``). Retries re-send the
same command_id: the slave answers a repeated command_id with its original result, so a command whose
reply was lost ("timed out but executed") is never executed twice. A rule is keyed by the command's
``Phase`` (from its stage and outcome) and the input: the late result after giving up and everything a
finished command hears are rows of the table like any other. Core's sends go to the Agent, which is
the one writer into the terminal (``relay``): a send is a request the Agent writes only when it is not
already waiting on a fresh write of its own, so ``attempt`` here counts Core's sends, and the number on
the pipe is the Agent's (never below Core's).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from echo.delivery.effects import (
    Alert,
    CancelRetry,
    Done,
    Effect,
    Ignore,
    Invalid,
    Persist,
    RetryAt,
    Send,
    Settings,
    Timeout,
    Timing,
)
from echo.delivery.intent import (
    INTENT_TABLE,
    Acked,
    AckKind,
    Connected,
    Intent,
    IntentInput,
    IntentResult,
    IntentStatus,
    intent_transition,
)

__all__ = [
    "COMMAND_RULES",
    "COMMAND_TABLE",
    "INTENT_TABLE",
    "AckKind",
    "Acked",
    "AgentBuffered",
    "Alert",
    "CancelRetry",
    "Command",
    "CommandInput",
    "Confirmed",
    "Connected",
    "Done",
    "Effect",
    "Ignore",
    "Intent",
    "IntentInput",
    "IntentResult",
    "IntentStatus",
    "Invalid",
    "Journaled",
    "NotDelivered",
    "Outcome",
    "Persist",
    "Phase",
    "PipeDelivered",
    "Reconnected",
    "Result",
    "RetryAt",
    "Send",
    "Sent",
    "Settings",
    "Stage",
    "Timeout",
    "Timing",
    "command_transition",
    "intent_transition",
    "phase",
]

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


_PERSIST = Persist()
_CANCEL_RETRY = CancelRetry()
"""Effects without fields, made once (they compare equal to any other instance)."""


class _Keep(enum.Enum):
    KEEP = "KEEP"


def _with(
    s: Command,
    stage: Stage | None = None,
    outcome: Outcome | None = None,
    attempt: int | None = None,
    next_retry_at_ms: int | _Keep | None = _Keep.KEEP,
    last_error: str | None = None,
) -> Command:
    """``s`` with the fields given changed: ``dataclasses.replace`` without its reflection on every call
    (each command goes through several transitions per copy)."""
    return Command(
        s.stage if stage is None else stage,
        s.outcome if outcome is None else outcome,
        s.attempt if attempt is None else attempt,
        s.next_retry_at_ms if next_retry_at_ms is _Keep.KEEP else next_retry_at_ms,
        s.last_error if last_error is None else last_error,
    )


@dataclass(frozen=True, slots=True)
class Journaled:
    """Core recorded the command: it may leave now."""


@dataclass(frozen=True, slots=True)
class Sent:
    """The send actually left Core (handed to the Agent's link), which may be well after it was queued
    when Core is busy: the wait for an answer counts from here."""


@dataclass(frozen=True, slots=True)
class AgentBuffered:
    """The Agent holds it for the terminal (offline, or busy reading earlier lines) and writes it when it
    can."""


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
class Reconnected:
    """The slave's terminal is connected again: what it has not answered goes out now, not at the timer."""


CommandInput: TypeAlias = (
    Journaled | Sent | AgentBuffered | PipeDelivered | NotDelivered | Confirmed | Timeout | Reconnected
)
Result: TypeAlias = tuple[Command, list[Effect]]


def _journaled(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # NEW --Journaled--> CORE_ACCEPTED: first send, and a retry timer in case nothing comes back.
    at = now + cfg.retry_delay_ms(1)
    return _with(s, stage=Stage.CORE_ACCEPTED, attempt=1, next_retry_at_ms=at), [
        _PERSIST,
        Send(1),
        RetryAt(at),
    ]


def _rearm(s: Command, now: int, cfg: Settings) -> Command | None:
    """The timer moved to a whole retry delay from now, or None when it already runs that long (within a
    twentieth of the ack timeout: a send that left at once changes nothing)."""
    if s.next_retry_at_ms is None:
        return None
    at = now + cfg.retry_delay_ms(s.attempt)
    return _with(s, next_retry_at_ms=at) if at > s.next_retry_at_ms + cfg.ack_timeout_ms // 20 else None


def _sent(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The send left Core now, not when it was queued: the answer gets a whole retry delay from here, so a
    # busy Core never re-sends what still sat in its own outbox. Only the timer moves: a restart re-arms
    # it from the journal's (earlier) time, which at worst sends once more, never less.
    if s.stage >= Stage.PIPE_DELIVERED:
        return s, [Ignore(f"sent after {s.stage.name}")]
    new = _rearm(s, now, cfg)
    if new is None:
        return s, [Ignore("timer already runs a whole delay from now")]
    assert new.next_retry_at_ms is not None
    return new, [RetryAt(new.next_retry_at_ms)]


def _advance(stage: Stage) -> Callable[[Command, CommandInput, int, Settings], Result]:
    # AGENT_BUFFERED: the Agent holds the command and writes it when the terminal can take it; PIPE_DELIVERED:
    # the terminal took the line. Either way the next answer gets a whole retry delay from now before Core
    # asks the Agent again (a buffered command's repeated ack moves only the timer).
    def step(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
        if s.stage >= stage:
            if stage is Stage.AGENT_BUFFERED and s.stage is Stage.AGENT_BUFFERED:
                return _sent(s, i, now, cfg)
            return s, [Ignore(f"already at {s.stage.name}")]
        new = _rearm(s, now, cfg)
        if new is not None:
            assert new.next_retry_at_ms is not None
            return _with(new, stage=stage), [_PERSIST, RetryAt(new.next_retry_at_ms)]
        return _with(s, stage=stage), [_PERSIST]

    return step


def _confirmed(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # Any pending stage --Confirmed--> EA_CONFIRMED with the slave's outcome. Only this ends a command well.
    assert isinstance(i, Confirmed)
    outcome = Outcome.OK if i.success else Outcome.FAILED
    new = _with(
        s,
        stage=Stage.EA_CONFIRMED,
        outcome=outcome,
        next_retry_at_ms=None,
        last_error="" if i.success else i.error_code,
    )
    return new, [_PERSIST, _CANCEL_RETRY, Done(i.success, "confirmed" if i.success else i.error_code)]


def _not_delivered(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The hop below said it could not deliver: try again after the backoff (not at once: the terminal is
    # likely offline), unless the sends are used up.
    assert isinstance(i, NotDelivered)
    return _retry_later(s, now, cfg, i.reason)


def _retry_later(s: Command, now: int, cfg: Settings, reason: str) -> Result:
    if s.attempt >= cfg.max_retries:
        new = _with(s, outcome=Outcome.FAILED, next_retry_at_ms=None, last_error=f"gave up: {reason}")
        return new, [_PERSIST, _CANCEL_RETRY, Done(False, f"gave_up after {s.attempt} sends: {reason}")]
    at = now + cfg.retry_delay_ms(s.attempt)
    return _with(s, next_retry_at_ms=at, last_error=reason), [_PERSIST, RetryAt(at)]


def _timeout(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The timer fired with no result: re-send the same command_id (attempt + 1), or give up.
    if s.next_retry_at_ms is None or now < s.next_retry_at_ms:
        return s, [Ignore("timer not due")]
    if s.attempt >= cfg.max_retries:
        return _retry_later(s, now, cfg, "no result")
    attempt = s.attempt + 1
    at = now + cfg.retry_delay_ms(attempt)
    new = _with(s, attempt=attempt, next_retry_at_ms=at, last_error="no result before the ack timeout")
    return new, [_PERSIST, Send(attempt), RetryAt(at)]


def _reconnected(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # The path to the terminal is back: re-send now (the earlier send may have died with the connection).
    if s.attempt >= cfg.max_retries:
        return _retry_later(s, now, cfg, "no result")
    attempt = s.attempt + 1
    at = now + cfg.retry_delay_ms(attempt)
    new = _with(s, attempt=attempt, next_retry_at_ms=at, last_error="re-sent after the terminal reconnected")
    return new, [_PERSIST, Send(attempt), RetryAt(at)]


def _late(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # A finished command hears more: duplicate results, late acks, a stale timer. Nothing changes.
    return s, [Ignore(f"{type(i).__name__} after {s.outcome.value}")]


def _confirmed_after_give_up(s: Command, i: CommandInput, now: int, cfg: Settings) -> Result:
    # FAILED (gave up, never confirmed) --Confirmed--> EA_CONFIRMED: "timed out but executed". What the
    # terminal did is the truth: recorded, and flagged, but no second Done.
    assert isinstance(i, Confirmed)
    outcome = Outcome.OK if i.success else Outcome.FAILED
    new = _with(
        s,
        stage=Stage.EA_CONFIRMED,
        outcome=outcome,
        next_retry_at_ms=None,
        last_error="" if i.success else i.error_code,
    )
    return new, [_PERSIST, Alert(f"result after giving up: {outcome.value}")]


class Phase(enum.Enum):
    """Where a command's lifecycle is, from its (stage, outcome): the first half of a rule's key."""

    NEW = "NEW"
    """Pending, not journaled yet."""
    STARTED = "STARTED"
    """Pending and journaled (stage >= CORE_ACCEPTED)."""
    GAVE_UP = "GAVE_UP"
    """FAILED without a result: every send went unanswered. A late result is still the truth."""
    FINISHED = "FINISHED"
    """The terminal's result is in (or the command ended otherwise): nothing changes it any more."""


_PHASES: tuple[Phase, ...] = (Phase.NEW, Phase.STARTED, Phase.GAVE_UP, Phase.FINISHED)


def _phase_index(s: Command) -> int:
    """The position of ``phase(s)`` in ``_PHASES`` (``s.gave_up`` spelt out: this runs on every input)."""
    if s.outcome is Outcome.PENDING:
        return 1 if s.stage >= Stage.CORE_ACCEPTED else 0
    return 2 if s.outcome is Outcome.FAILED and s.stage < Stage.EA_CONFIRMED else 3


def phase(s: Command) -> Phase:
    return _PHASES[_phase_index(s)]


_Handler: TypeAlias = Callable[[Command, CommandInput, int, Settings], Result]
_COMMAND_INPUTS: tuple[type, ...] = (
    Journaled,
    Sent,
    AgentBuffered,
    PipeDelivered,
    NotDelivered,
    Confirmed,
    Timeout,
    Reconnected,
)

COMMAND_RULES: dict[tuple[Phase, type], _Handler] = {
    # (phase, input) -> handler: the whole command lifecycle.
    (Phase.NEW, Journaled): _journaled,
    (Phase.STARTED, Sent): _sent,
    (Phase.STARTED, AgentBuffered): _advance(Stage.AGENT_BUFFERED),
    (Phase.STARTED, PipeDelivered): _advance(Stage.PIPE_DELIVERED),
    (Phase.STARTED, NotDelivered): _not_delivered,
    (Phase.STARTED, Confirmed): _confirmed,
    (Phase.STARTED, Timeout): _timeout,
    (Phase.STARTED, Reconnected): _reconnected,
    # a result after giving up is applied ("timed out but executed"); anything else after it is stale
    (Phase.GAVE_UP, Confirmed): _confirmed_after_give_up,
    **{(Phase.GAVE_UP, t): _late for t in _COMMAND_INPUTS if t is not Confirmed},
    # a finished command hears duplicate results, late acks, a stale timer: nothing changes
    **{(Phase.FINISHED, t): _late for t in _COMMAND_INPUTS},
}
"""Missing pairs are impossible inputs, answered with ``Invalid``: a result for a command that was never
journaled, a second Journaled."""

COMMAND_TABLE: dict[tuple[bool, type], _Handler] = {
    (p is Phase.STARTED, t): h for (p, t), h in COMMAND_RULES.items() if p in (Phase.NEW, Phase.STARTED)
}
"""The rules for a pending command keyed (journaled?, input): the pending rows of ``COMMAND_RULES``."""


_RULES_BY_INPUT: dict[type, tuple[_Handler | None, ...]] = {
    t: tuple(COMMAND_RULES.get((p, t)) for p in _PHASES) for t in _COMMAND_INPUTS
}
"""``COMMAND_RULES`` by input type, then by phase (in ``_PHASES`` order): the same rules, looked up
without hashing an enum member on every transition."""


def command_transition(state: Command, event: CommandInput, now_ms: int, settings: Settings) -> Result:
    rules = _RULES_BY_INPUT.get(type(event))
    handler = rules[_phase_index(state)] if rules is not None else None
    if handler is None:
        return state, [
            Invalid(state.stage.name, type(event).__name__, "no rule for this input in this stage")
        ]
    return handler(state, event, now_ms, settings)
