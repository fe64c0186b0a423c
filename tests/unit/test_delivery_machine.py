"""The delivery machines (seed 000, plan i17), tested the h11 way: the table directly, then two endpoints
over a lossy fake link, then hypothesis stateful tests with drop, duplicate, reorder and restart."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from echo.delivery.machine import (
    COMMAND_TABLE,
    Acked,
    AgentBuffered,
    Alert,
    CancelRetry,
    Command,
    CommandInput,
    Confirmed,
    Connected,
    Done,
    Effect,
    Ignore,
    Intent,
    IntentInput,
    IntentStatus,
    Invalid,
    Journaled,
    NotDelivered,
    Outcome,
    Persist,
    PipeDelivered,
    Reconnected,
    RetryAt,
    Send,
    Sent,
    Settings,
    Stage,
    Timeout,
    command_transition,
    intent_transition,
)

CFG = Settings(ack_timeout_ms=1000, retry_backoff_ms=500, max_retries=3, max_backoff_ms=30_000)
T = 1_764_063_000_000

ALL_COMMAND_INPUTS: list[CommandInput] = [
    Journaled(),
    Sent(),
    AgentBuffered(),
    PipeDelivered(),
    NotDelivered("offline"),
    Confirmed(True),
    Confirmed(False, "INVALID_VOLUME"),
    Timeout(),
    Reconnected(),
]
ALL_INTENT_INPUTS: list[IntentInput] = [
    Connected(),
    Acked("OK"),
    Acked("DUPLICATE"),
    Acked("REJECTED"),
    Acked("RETRY"),
    Acked("BOGUS"),
    Timeout(),
]


def _id(x: object) -> str:
    return repr(x)


def started(stage: Stage = Stage.CORE_ACCEPTED, attempt: int = 1, due: int | None = 1500) -> Command:
    return Command(stage=stage, attempt=attempt, next_retry_at_ms=due)


PENDING_STAGES = [Stage.CORE_ACCEPTED, Stage.AGENT_BUFFERED, Stage.PIPE_DELIVERED]
CONFIRMED_OK = Command(stage=Stage.EA_CONFIRMED, outcome=Outcome.OK, attempt=2)
CONFIRMED_FAILED = Command(
    stage=Stage.EA_CONFIRMED, outcome=Outcome.FAILED, attempt=1, last_error="INVALID_VOLUME"
)
GAVE_UP = Command(
    stage=Stage.AGENT_BUFFERED, outcome=Outcome.FAILED, attempt=3, last_error="gave up: no result"
)
REACHABLE_COMMANDS = [
    Command(),
    *(started(s) for s in PENDING_STAGES),
    *(started(s, attempt=3, due=9000) for s in PENDING_STAGES),
    CONFIRMED_OK,
    CONFIRMED_FAILED,
    GAVE_UP,
]


def check_effect_list(effects: list[Effect]) -> None:
    """Every list: a Persist before any Send, at most one Send, and an Invalid only on its own."""
    sends = [i for i, e in enumerate(effects) if isinstance(e, Send)]
    assert len(sends) <= 1
    if sends:
        assert Persist() in effects[: sends[0]]
    if any(isinstance(e, Invalid) for e in effects):
        assert len(effects) == 1


# ===================================================================================== the table directly


def test_command_table_has_exactly_the_documented_rules() -> None:
    assert set(COMMAND_TABLE) == {
        (False, Journaled),
        (True, Sent),
        (True, AgentBuffered),
        (True, PipeDelivered),
        (True, NotDelivered),
        (True, Confirmed),
        (True, Timeout),
        (True, Reconnected),
    }


@pytest.mark.parametrize("now", [0, T])
def test_journaled_sends_the_first_attempt_and_arms_the_timer(now: int) -> None:
    new, effects = command_transition(Command(), Journaled(), now, CFG)
    at = now + CFG.ack_timeout_ms + CFG.retry_backoff_ms
    assert new == Command(stage=Stage.CORE_ACCEPTED, attempt=1, next_retry_at_ms=at)
    assert effects == [Persist(), Send(1), RetryAt(at)]


PROGRESS = [
    (Stage.CORE_ACCEPTED, AgentBuffered(), Stage.AGENT_BUFFERED),
    (Stage.CORE_ACCEPTED, PipeDelivered(), Stage.PIPE_DELIVERED),
    (Stage.AGENT_BUFFERED, PipeDelivered(), Stage.PIPE_DELIVERED),
]
"""A command's progress before its result: the stage it was in, what was heard, the stage it moves to."""


def test_journaled_at_zero_with_default_settings() -> None:
    new, effects = command_transition(Command(), Journaled(), 0, Settings())
    assert (new.stage, new.attempt, new.next_retry_at_ms) == (Stage.CORE_ACCEPTED, 1, 1500)
    assert effects == [Persist(), Send(1), RetryAt(1500)]


@pytest.mark.parametrize(("before", "event", "after"), PROGRESS, ids=_id)
def test_progress_moves_the_stage_and_keeps_a_later_timer(
    before: Stage, event: CommandInput, after: Stage
) -> None:
    s = started(before, attempt=2, due=4000)
    new, effects = command_transition(s, event, 100, CFG)
    assert new == replace(s, stage=after)
    assert new.next_retry_at_ms == 4000
    assert effects == [Persist()]


@pytest.mark.parametrize(("before", "event", "after"), PROGRESS, ids=_id)
def test_progress_gives_the_answer_a_whole_retry_delay_from_now(
    before: Stage, event: CommandInput, after: Stage
) -> None:
    """The terminal took the line, or the Agent holds it for a terminal still reading, just before Core's
    timer: Core waits a full delay instead of asking the Agent again at once."""
    s = started(before, attempt=2, due=4000)
    new, effects = command_transition(s, event, 3990, CFG)
    at = 3990 + CFG.retry_delay_ms(2)
    assert new == replace(s, stage=after, next_retry_at_ms=at)
    assert effects == [Persist(), RetryAt(at)]
    late, effects = command_transition(new, Timeout(), 4000, CFG)
    assert late == new and effects == [Ignore("timer not due")]


def test_a_repeated_buffered_ack_moves_only_the_timer() -> None:
    """The Agent still holds it (each send from Core is answered so): no journal row, a later timer."""
    s = started(Stage.AGENT_BUFFERED, attempt=2, due=4000)
    new, effects = command_transition(s, AgentBuffered(), 3990, CFG)
    at = 3990 + CFG.retry_delay_ms(2)
    assert new == replace(s, next_retry_at_ms=at)
    assert effects == [RetryAt(at)]


# ------------------------------------------------------------------------------ sent: when it really left


def test_sent_when_it_left_restarts_the_wait_without_a_journal_row() -> None:
    """Journaled at 0, but Core was busy and the send left only at 1200: the ack timeout counts from
    1200, so the timer that would have re-sent it at 1500 (while it was in Core's own outbox) moves."""
    s, effects = command_transition(Command(), Journaled(), 0, CFG)
    assert effects == [Persist(), Send(1), RetryAt(1500)]
    left, effects = command_transition(s, Sent(), 1200, CFG)
    assert left == replace(s, next_retry_at_ms=2700)
    assert effects == [RetryAt(2700)]
    assert command_transition(left, Timeout(), 1500, CFG) == (left, [Ignore("timer not due")])
    again, effects = command_transition(left, Timeout(), 2700, CFG)
    assert again.attempt == 2 and Send(2) in effects


@pytest.mark.parametrize("left_after", [0, 1, CFG.ack_timeout_ms // 20])
def test_sent_at_once_changes_nothing(left_after: int) -> None:
    """A send that left within a twentieth of the ack timeout: not worth moving the timer."""
    s, _ = command_transition(Command(), Journaled(), 0, CFG)
    ignored = (s, [Ignore("timer already runs a whole delay from now")])
    assert command_transition(s, Sent(), left_after, CFG) == ignored


def test_sent_after_the_terminal_took_it_is_ignored() -> None:
    s = started(Stage.PIPE_DELIVERED, due=4000)
    assert command_transition(s, Sent(), 3000, CFG) == (s, [Ignore("sent after PIPE_DELIVERED")])


@given(
    sent_at=st.lists(st.integers(min_value=0, max_value=60_000), min_size=1, max_size=6),
    attempt=st.integers(min_value=1, max_value=3),
)
def test_no_resend_is_due_sooner_than_a_retry_delay_after_the_last_send_left(
    sent_at: list[int], attempt: int
) -> None:
    """Whenever the sends leave, the timer is never due before the last one left plus a whole delay,
    and only the timer moves (no journal row, no send)."""
    s = started(Stage.CORE_ACCEPTED, attempt=attempt, due=CFG.retry_delay_ms(attempt))
    for t in sorted(sent_at):
        s2, effects = command_transition(s, Sent(), t, CFG)
        assert all(isinstance(e, RetryAt | Ignore) for e in effects)
        assert (s2.stage, s2.attempt, s2.outcome) == (s.stage, s.attempt, s.outcome)
        s = s2
        assert s.next_retry_at_ms is not None
        assert s.next_retry_at_ms >= t + CFG.retry_delay_ms(attempt) - CFG.ack_timeout_ms // 20
    assert s.next_retry_at_ms is not None
    assert command_transition(s, Timeout(), s.next_retry_at_ms - 1, CFG)[1] == [Ignore("timer not due")]


@pytest.mark.parametrize(
    ("before", "event"),
    [
        (Stage.PIPE_DELIVERED, AgentBuffered()),
        (Stage.PIPE_DELIVERED, PipeDelivered()),
    ],
    ids=_id,
)
def test_progress_never_moves_backwards(before: Stage, event: CommandInput) -> None:
    s = started(before)
    new, effects = command_transition(s, event, 100, CFG)
    assert new == s
    assert effects == [Ignore(f"already at {before.name}")]


@pytest.mark.parametrize("stage", PENDING_STAGES, ids=_id)
def test_confirmed_success_ends_the_command_ok(stage: Stage) -> None:
    s = replace(started(stage, attempt=2), last_error="no result before the ack timeout")
    new, effects = command_transition(s, Confirmed(True), 700, CFG)
    assert new == Command(stage=Stage.EA_CONFIRMED, outcome=Outcome.OK, attempt=2)
    assert effects == [Persist(), CancelRetry(), Done(True, "confirmed")]


@pytest.mark.parametrize("stage", PENDING_STAGES, ids=_id)
def test_confirmed_failure_ends_the_command_failed_with_the_error_code(stage: Stage) -> None:
    new, effects = command_transition(started(stage), Confirmed(False, "INVALID_VOLUME"), 700, CFG)
    assert new == CONFIRMED_FAILED
    assert effects == [Persist(), CancelRetry(), Done(False, "INVALID_VOLUME")]


@pytest.mark.parametrize("stage", PENDING_STAGES, ids=_id)
def test_not_delivered_waits_for_the_backoff_without_sending(stage: Stage) -> None:
    s = started(stage, attempt=2, due=4000)
    new, effects = command_transition(s, NotDelivered("terminal offline"), 200, CFG)
    at = 200 + CFG.retry_delay_ms(2)
    assert new == replace(s, next_retry_at_ms=at, last_error="terminal offline")
    assert effects == [Persist(), RetryAt(at)]


def test_not_delivered_after_the_last_send_gives_up() -> None:
    s = started(Stage.AGENT_BUFFERED, attempt=3, due=9000)
    new, effects = command_transition(s, NotDelivered("terminal offline"), 200, CFG)
    assert new == replace(
        s, outcome=Outcome.FAILED, next_retry_at_ms=None, last_error="gave up: terminal offline"
    )
    assert effects == [Persist(), CancelRetry(), Done(False, "gave_up after 3 sends: terminal offline")]


@pytest.mark.parametrize("now", [0, 1499])
def test_timeout_before_due_is_ignored(now: int) -> None:
    s = started(due=1500)
    assert command_transition(s, Timeout(), now, CFG) == (s, [Ignore("timer not due")])


def test_timeout_without_a_timer_is_ignored() -> None:
    s = started(due=None)
    assert command_transition(s, Timeout(), 10**9, CFG) == (s, [Ignore("timer not due")])


@pytest.mark.parametrize("stage", PENDING_STAGES, ids=_id)
@pytest.mark.parametrize("late_by", [0, 250])
def test_timeout_when_due_resends_the_same_command(stage: Stage, late_by: int) -> None:
    s = started(stage, attempt=1, due=1500)
    now = 1500 + late_by
    new, effects = command_transition(s, Timeout(), now, CFG)
    at = now + CFG.retry_delay_ms(2)
    assert at == now + 2000
    assert new == replace(s, attempt=2, next_retry_at_ms=at, last_error="no result before the ack timeout")
    assert effects == [Persist(), Send(2), RetryAt(at)]


def test_timeout_after_max_retries_sends_gives_up_without_sending() -> None:
    s = started(Stage.PIPE_DELIVERED, attempt=3, due=9000)
    new, effects = command_transition(s, Timeout(), 9000, CFG)
    assert new == replace(s, outcome=Outcome.FAILED, next_retry_at_ms=None, last_error="gave up: no result")
    assert new.finished
    assert effects == [Persist(), CancelRetry(), Done(False, "gave_up after 3 sends: no result")]
    assert not any(isinstance(e, Send) for e in effects)


@pytest.mark.parametrize("stage", PENDING_STAGES, ids=_id)
def test_reconnected_resends_at_once(stage: Stage) -> None:
    s = started(stage, attempt=1, due=1500)
    new, effects = command_transition(s, Reconnected(), 300, CFG)
    at = 300 + CFG.retry_delay_ms(2)
    assert new == replace(
        s, attempt=2, next_retry_at_ms=at, last_error="re-sent after the terminal reconnected"
    )
    assert effects == [Persist(), Send(2), RetryAt(at)]


def test_reconnected_after_max_retries_sends_gives_up() -> None:
    s = started(attempt=3, due=9000)
    new, effects = command_transition(s, Reconnected(), 300, CFG)
    assert new.outcome is Outcome.FAILED and new.last_error == "gave up: no result"
    assert effects == [Persist(), CancelRetry(), Done(False, "gave_up after 3 sends: no result")]


def test_giving_up_after_max_retries_sends_in_a_full_run() -> None:
    s, effects = command_transition(Command(), Journaled(), 0, CFG)
    sends = [e for e in effects if isinstance(e, Send)]
    dones: list[Done] = []
    while not s.finished:
        assert s.next_retry_at_ms is not None
        s, effects = command_transition(s, Timeout(), s.next_retry_at_ms, CFG)
        sends += [e for e in effects if isinstance(e, Send)]
        dones += [e for e in effects if isinstance(e, Done)]
    assert sends == [Send(1), Send(2), Send(3)]
    assert s.outcome is Outcome.FAILED and s.stage is Stage.CORE_ACCEPTED and s.attempt == 3
    assert dones == [Done(False, "gave_up after 3 sends: no result")]
    # the timer of the last send was waited out: 1500 + 2000 + 3000
    after, effects = command_transition(s, Timeout(), 10**9, CFG)
    assert after == s and effects == [Ignore("Timeout after FAILED")]


@pytest.mark.parametrize("event", [e for e in ALL_COMMAND_INPUTS if not isinstance(e, Journaled)], ids=_id)
def test_inputs_before_journaled_are_invalid(event: CommandInput) -> None:
    s = Command()
    new, effects = command_transition(s, event, 100, CFG)
    assert new == s
    assert effects == [Invalid("NEW", type(event).__name__, "no rule for this input in this stage")]


@pytest.mark.parametrize("stage", PENDING_STAGES, ids=_id)
def test_a_second_journaled_is_invalid(stage: Stage) -> None:
    s = started(stage)
    new, effects = command_transition(s, Journaled(), 100, CFG)
    assert new == s
    assert effects == [Invalid(stage.name, "Journaled", "no rule for this input in this stage")]


@pytest.mark.parametrize("state", [CONFIRMED_OK, CONFIRMED_FAILED], ids=_id)
@pytest.mark.parametrize("event", ALL_COMMAND_INPUTS, ids=_id)
def test_everything_after_ea_confirmed_is_ignored(state: Command, event: CommandInput) -> None:
    new, effects = command_transition(state, event, 10**9, CFG)
    assert new == state
    assert effects == [Ignore(f"{type(event).__name__} after {state.outcome.value}")]


@pytest.mark.parametrize("event", [e for e in ALL_COMMAND_INPUTS if not isinstance(e, Confirmed)], ids=_id)
def test_everything_after_giving_up_is_ignored(event: CommandInput) -> None:
    # (A late Confirmed after giving up is left out on purpose: see the report on "outcome unknown".)
    new, effects = command_transition(GAVE_UP, event, 10**9, CFG)
    assert new == GAVE_UP
    assert effects == [Ignore(f"{type(event).__name__} after FAILED")]


@pytest.mark.parametrize("state", REACHABLE_COMMANDS, ids=_id)
@pytest.mark.parametrize("event", ALL_COMMAND_INPUTS, ids=_id)
@pytest.mark.parametrize("now", [0, 1500, 10**9])
def test_every_command_rule_keeps_the_general_promises(state: Command, event: CommandInput, now: int) -> None:
    new, effects = command_transition(state, event, now, CFG)
    check_effect_list(effects)
    assert new.stage >= state.stage
    assert new.attempt in (state.attempt, state.attempt + 1)
    if new != state and Persist() not in effects:
        # only the timer moved (the send left, or the Agent still holds it): no journal row
        assert isinstance(event, Sent | AgentBuffered)
        assert effects == [RetryAt(new.next_retry_at_ms or 0)]
        assert new == replace(state, next_retry_at_ms=new.next_retry_at_ms)
    elif new != state:
        assert effects[0] == Persist()
    else:
        assert Persist() not in effects
    if any(isinstance(e, (Ignore, Invalid)) for e in effects):
        assert new == state and len(effects) == 1
    for e in effects:
        if isinstance(e, Send):
            assert e.attempt == new.attempt
        if isinstance(e, RetryAt):
            assert e.at_ms == new.next_retry_at_ms and e.at_ms > now
    assert (Done in map(type, effects)) == (new.finished and not state.finished)


# ----------------------------------------------------------------------------------------- intent table


def sent(attempt: int = 1, due: int | None = 1500) -> Intent:
    return Intent(status=IntentStatus.SENT, attempt=attempt, next_retry_at_ms=due)


PAUSED = Intent(status=IntentStatus.PAUSED, attempt=3)


@pytest.mark.parametrize(
    ("state", "attempt"), [(Intent(), 1), (sent(1), 2), (sent(3, 9000), 4), (PAUSED, 4)], ids=_id
)
def test_connected_sends_now_even_beyond_max_retries(state: Intent, attempt: int) -> None:
    new, effects = intent_transition(state, Connected(), 100, CFG)
    at = 100 + CFG.retry_delay_ms(attempt)
    assert new == Intent(status=IntentStatus.SENT, attempt=attempt, next_retry_at_ms=at)
    assert effects == [Persist(), Send(attempt), RetryAt(at)]


def test_connected_at_zero_sends_the_first_attempt() -> None:
    assert intent_transition(Intent(), Connected(), 0, CFG) == (
        Intent(status=IntentStatus.SENT, attempt=1, next_retry_at_ms=1500),
        [Persist(), Send(1), RetryAt(1500)],
    )


@pytest.mark.parametrize("ack", ["OK", "DUPLICATE", "REJECTED", "RETRY", "BOGUS"])
def test_acked_before_any_send_is_invalid(ack: str) -> None:
    s = Intent()
    assert intent_transition(s, Acked(ack), 100, CFG) == (
        s,
        [Invalid("QUEUED", "Acked", "an ack for an intent that was never sent")],
    )


@pytest.mark.parametrize("state", [sent(2, 3500), PAUSED], ids=_id)
@pytest.mark.parametrize("ack", ["OK", "DUPLICATE"])
def test_acked_ok_or_duplicate_ends_the_intent(state: Intent, ack: str) -> None:
    new, effects = intent_transition(state, Acked(ack), 100, CFG)
    assert new == Intent(status=IntentStatus.ACKED, attempt=state.attempt)
    assert effects == [Persist(), CancelRetry(), Done(True, ack)]


@pytest.mark.parametrize("state", [sent(2, 3500), PAUSED], ids=_id)
def test_acked_rejected_drops_the_intent(state: Intent) -> None:
    new, effects = intent_transition(state, Acked("REJECTED"), 100, CFG)
    assert new == Intent(status=IntentStatus.DROPPED, attempt=state.attempt)
    assert effects == [Persist(), CancelRetry(), Done(False, "rejected")]


def test_acked_retry_reschedules_after_retry_backoff_ms_without_sending() -> None:
    new, effects = intent_transition(sent(2, 3500), Acked("RETRY"), 100, CFG)
    at = 100 + CFG.retry_backoff_ms
    assert new == sent(2, at)
    assert effects == [Persist(), RetryAt(at)]


def test_acked_with_an_unknown_status_is_invalid() -> None:
    s = sent(2, 3500)
    assert intent_transition(s, Acked("BOGUS"), 100, CFG) == (
        s,
        [Invalid("SENT", "Acked(BOGUS)", "unknown ack status")],
    )


@pytest.mark.parametrize(
    ("state", "now"),
    [(Intent(), 10**9), (PAUSED, 10**9), (sent(1, 1500), 1499), (sent(1, None), 10**9)],
    ids=_id,
)
def test_intent_timeout_not_due_is_ignored(state: Intent, now: int) -> None:
    assert intent_transition(state, Timeout(), now, CFG) == (state, [Ignore("timer not due")])


def test_intent_timeout_when_due_resends() -> None:
    new, effects = intent_transition(sent(1, 1500), Timeout(), 1600, CFG)
    at = 1600 + CFG.retry_delay_ms(2)
    assert new == sent(2, at)
    assert effects == [Persist(), Send(2), RetryAt(at)]


def test_intent_timeout_after_max_retries_pauses_with_an_alert() -> None:
    new, effects = intent_transition(sent(3, 9000), Timeout(), 9000, CFG)
    assert new == Intent(status=IntentStatus.PAUSED, attempt=3, next_retry_at_ms=None)
    assert effects == [
        Persist(),
        CancelRetry(),
        Alert("no ack after 3 sends; trying again at the next reconnect"),
    ]


@pytest.mark.parametrize(
    "state",
    [Intent(status=IntentStatus.ACKED, attempt=2), Intent(status=IntentStatus.DROPPED, attempt=1)],
    ids=_id,
)
@pytest.mark.parametrize("event", ALL_INTENT_INPUTS, ids=_id)
def test_everything_after_the_intent_ended_is_ignored(state: Intent, event: IntentInput) -> None:
    new, effects = intent_transition(state, event, 10**9, CFG)
    assert new == state
    assert effects == [Ignore(f"{type(event).__name__} after {state.status.value}")]


# ------------------------------------------------------------------------------------------ retry delay


def test_retry_delay_doubles_then_caps() -> None:
    s = Settings()
    assert [s.retry_delay_ms(a) for a in range(1, 9)] == [
        1500,
        2000,
        3000,
        5000,
        9000,
        17000,
        31000,
        31000,
    ]
    assert s.retry_delay_ms(10_000) == 31000


@settings(max_examples=200, deadline=None)
@given(
    ack=st.integers(1, 60_000),
    backoff=st.integers(0, 10_000),
    cap=st.integers(0, 120_000),
    attempt=st.integers(1, 200),
)
def test_retry_delay_grows_and_is_capped(ack: int, backoff: int, cap: int, attempt: int) -> None:
    s = Settings(ack_timeout_ms=ack, retry_backoff_ms=backoff, max_backoff_ms=cap)
    d = s.retry_delay_ms(attempt)
    assert ack <= d <= ack + cap
    assert d <= s.retry_delay_ms(attempt + 1)
    if backoff * 2 ** (attempt - 1) <= cap:
        assert d == ack + backoff * 2 ** (attempt - 1)
    else:
        assert d == ack + cap


# ======================================================================= two endpoints over a lossy link

LINK_CFG = Settings(ack_timeout_ms=100, retry_backoff_ms=50, max_retries=100, max_backoff_ms=2000)


def slave_result(command_id: int) -> Confirmed:
    """What the slave's terminal answers for a command (some fail, to carry a real error code)."""
    return Confirmed(True) if command_id % 3 else Confirmed(False, f"ERR_{command_id}")


@dataclass
class Slave:
    """Executes each command_id at most once; a repeated command_id gets the stored result."""

    results: dict[int, Confirmed] = field(default_factory=dict)
    executions: Counter[int] = field(default_factory=Counter)

    def handle(self, command_id: int) -> Confirmed:
        if command_id not in self.results:
            self.executions[command_id] += 1
            self.results[command_id] = slave_result(command_id)
        return self.results[command_id]


@dataclass
class World:
    """Core, slave and a lossy link in both directions, on a virtual clock driven by an event heap."""

    rng: random.Random
    drop: float
    dup: float
    reorder: bool
    cfg: Settings
    offline: float = 0.0
    now: int = 0
    seq: int = 0
    events: list[tuple[int, int, str, int, Any]] = field(default_factory=list)
    states: dict[int, Command] = field(default_factory=dict)
    journal: dict[int, Command] = field(default_factory=dict)
    timers: dict[int, int | None] = field(default_factory=dict)
    sends: dict[int, list[int]] = field(default_factory=dict)
    dones: dict[int, list[Done]] = field(default_factory=dict)
    slave: Slave = field(default_factory=Slave)

    def _push(self, at: int, kind: str, cid: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, cid, payload))

    def link(self, kind: str, cid: int, payload: Any) -> None:
        """Drop, duplicate and (with random latencies longer than the ack timeout) reorder."""
        if self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            latency = self.rng.randint(1, 400) if self.reorder else 10
            self._push(self.now + latency, kind, cid, payload)

    def core(self, cid: int, event: CommandInput) -> None:
        new, effects = command_transition(self.states[cid], event, self.now, self.cfg)
        check_effect_list(effects)
        assert not any(isinstance(e, Invalid) for e in effects), effects
        for e in effects:
            if isinstance(e, Persist):
                self.journal[cid] = new
            elif isinstance(e, Send):
                assert self.journal[cid] == new  # persisted before it leaves
                self.sends[cid].append(e.attempt)
                self.link("to_agent", cid, e.attempt)
            elif isinstance(e, RetryAt):
                self.timers[cid] = e.at_ms
                self._push(e.at_ms, "timer", cid, e.at_ms)
            elif isinstance(e, CancelRetry):
                self.timers[cid] = None
            elif isinstance(e, Done):
                self.dones[cid].append(e)
        self.states[cid] = new

    def agent(self, cid: int) -> None:
        """The hop below Core: buffers, hands the line to the terminal (or cannot), relays the result."""
        if self.rng.random() < self.offline:
            self.link("to_core", cid, NotDelivered("terminal offline"))
            return
        self.link("to_core", cid, AgentBuffered())
        self.link("to_core", cid, PipeDelivered())
        self.link("to_core", cid, self.slave.handle(cid))

    def run(self, n: int) -> None:
        for cid in range(n):
            self.states[cid] = Command()
            self.sends[cid] = []
            self.dones[cid] = []
            self.core(cid, Journaled())
        for _ in range(200_000):
            if not self.events:
                return
            at, _, kind, cid, payload = heapq.heappop(self.events)
            assert at >= self.now
            self.now = at
            if kind == "timer":
                if self.timers[cid] == payload:  # the caller only fires the timer it armed last
                    self.core(cid, Timeout())
            elif kind == "to_agent":
                self.agent(cid)
            else:
                self.core(cid, payload)
        raise AssertionError("the simulation did not settle")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.5),
    reorder=st.booleans(),
    offline=st.sampled_from([0.0, 0.2]),
    n=st.integers(1, 8),
)
def test_lossy_link_every_command_is_confirmed_and_executed_once(
    seed: int, drop: float, dup: float, reorder: bool, offline: float, n: int
) -> None:
    w = World(random.Random(seed), drop, dup, reorder, LINK_CFG, offline=offline)
    w.run(n)
    for cid in range(n):
        s = w.states[cid]
        result = slave_result(cid)
        assert s.stage is Stage.EA_CONFIRMED
        assert s.outcome is (Outcome.OK if result.success else Outcome.FAILED)
        assert s.last_error == ("" if result.success else result.error_code)
        assert w.journal[cid] == s
        assert w.slave.executions[cid] == 1
        assert w.dones[cid] == [Done(result.success, "confirmed" if result.success else result.error_code)]
        assert 1 <= len(w.sends[cid]) <= LINK_CFG.max_retries
        assert w.sends[cid] == list(range(1, len(w.sends[cid]) + 1))


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    max_retries=st.integers(1, 4),
    dup=st.floats(0.0, 0.5),
    reorder=st.booleans(),
    n=st.integers(1, 8),
)
def test_dead_link_every_command_gives_up_unexecuted(
    seed: int, max_retries: int, dup: float, reorder: bool, n: int
) -> None:
    cfg = replace(LINK_CFG, max_retries=max_retries)
    w = World(random.Random(seed), 1.0, dup, reorder, cfg)
    w.run(n)
    assert not w.slave.executions
    for cid in range(n):
        s = w.states[cid]
        assert s.outcome is Outcome.FAILED and s.stage is Stage.CORE_ACCEPTED
        assert s.last_error == "gave up: no result"
        assert w.sends[cid] == list(range(1, max_retries + 1))
        assert w.dones[cid] == [Done(False, f"gave_up after {max_retries} sends: no result")]
        assert w.journal[cid] == s


# =========================================================================== hypothesis stateful tests


class CommandMachine(RuleBasedStateMachine):
    """One command, fed any input a real caller could produce, including a restart from its journal."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = CFG
        self.success = True
        self.now = 0
        self.state = Command()
        self.persisted = Command()
        self.max_stage = Stage.NEW
        self.finished_state: Command | None = None
        self.last_send = 0
        self.results_delivered = 0
        self.dones: list[Done] = []

    @initialize(max_retries=st.integers(1, 5), success=st.booleans())
    def setup(self, max_retries: int, success: bool) -> None:
        self.cfg = replace(CFG, max_retries=max_retries)
        self.success = success

    def feed(self, event: CommandInput) -> list[Effect]:
        before = self.state
        new, effects = command_transition(before, event, self.now, self.cfg)
        check_effect_list(effects)
        for e in effects:
            if isinstance(e, Persist):
                self.persisted = new
            elif isinstance(e, Send):
                assert e.attempt > self.last_send
                self.last_send = e.attempt
            elif isinstance(e, Done):
                self.dones.append(e)
            elif isinstance(e, Invalid):
                assert e.state == before.stage.name and e.input == type(event).__name__
        if new != replace(before, next_retry_at_ms=new.next_retry_at_ms):
            assert Persist() in effects
        if any(isinstance(e, (Invalid, Ignore)) for e in effects):
            assert new == before
        self.state = new
        return effects

    @rule()
    def journaled(self) -> None:
        self.feed(Journaled())

    @rule()
    def sent(self) -> None:
        self.feed(Sent())

    @rule()
    def send_result(self) -> None:
        was_pending = self.state.stage >= Stage.CORE_ACCEPTED and not self.state.finished
        self.feed(Confirmed(self.success, "NO_ERROR" if self.success else "TRADE_DISABLED"))
        if was_pending:
            assert self.state.stage is Stage.EA_CONFIRMED
            assert self.state.outcome is (Outcome.OK if self.success else Outcome.FAILED)
            self.results_delivered += 1

    @precondition(lambda self: self.results_delivered > 0)
    @rule()
    def duplicate_result(self) -> None:
        before = self.state
        effects = self.feed(Confirmed(self.success, "NO_ERROR" if self.success else "TRADE_DISABLED"))
        assert self.state == before and len(effects) == 1 and isinstance(effects[0], Ignore)

    @rule()
    def agent_buffered(self) -> None:
        self.feed(AgentBuffered())

    @rule()
    def pipe_delivered(self) -> None:
        self.feed(PipeDelivered())

    @rule(reason=st.sampled_from(["terminal offline", "too slow", "retry asked"]))
    def not_delivered(self, reason: str) -> None:
        self.feed(NotDelivered(reason))

    @rule()
    def reconnected(self) -> None:
        self.feed(Reconnected())

    @rule(by=st.integers(0, 40_000), to_due=st.booleans())
    def advance_time_and_timeout(self, by: int, to_due: bool) -> None:
        due = self.state.next_retry_at_ms
        if to_due and due is not None and due > self.now:
            self.now = due
        else:
            self.now += by
        before = self.state
        self.feed(Timeout())
        if due is None or self.now < due:
            assert self.state == before

    @rule()
    def restart(self) -> None:
        # the caller crashed and reloads the command from its journal (the last Persisted state)
        self.state = self.persisted

    @invariant()
    def stage_is_monotone(self) -> None:
        assert self.state.stage >= self.max_stage
        self.max_stage = self.state.stage

    @invariant()
    def attempts_are_bounded(self) -> None:
        assert self.state.attempt <= self.cfg.max_retries
        assert self.state.attempt == self.last_send

    @invariant()
    def finished_never_changes(self) -> None:
        # One exception: a command that gave up (FAILED below EA_CONFIRMED) still records a late result
        gave_up = self.finished_state is not None and self.finished_state.stage < Stage.EA_CONFIRMED
        if gave_up and self.state.stage is Stage.EA_CONFIRMED:
            self.finished_state = self.state
        if self.finished_state is not None:
            assert self.state == self.finished_state
        elif self.state.finished:
            self.finished_state = self.state
            assert self.state.next_retry_at_ms is None
        assert len(self.dones) == (1 if self.state.finished else 0)

    @invariant()
    def journal_is_current(self) -> None:
        # all but the timer, which may have moved later in memory only (a restart re-sends sooner, never
        # later than the journal says)
        assert self.persisted == replace(self.state, next_retry_at_ms=self.persisted.next_retry_at_ms)
        if self.persisted.next_retry_at_ms is not None and self.state.next_retry_at_ms is not None:
            assert self.persisted.next_retry_at_ms <= self.state.next_retry_at_ms


CommandMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestCommandMachine = CommandMachine.TestCase


class IntentMachine(RuleBasedStateMachine):
    """One master intent: connects, acks of every kind, timers and restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = CFG
        self.now = 0
        self.state = Intent()
        self.persisted = Intent()
        self.end_state: Intent | None = None
        self.last_send = 0
        self.connects = 0

    @initialize(max_retries=st.integers(1, 4))
    def setup(self, max_retries: int) -> None:
        self.cfg = replace(CFG, max_retries=max_retries)

    def feed(self, event: IntentInput) -> list[Effect]:
        before = self.state
        new, effects = intent_transition(before, event, self.now, self.cfg)
        check_effect_list(effects)
        for e in effects:
            if isinstance(e, Persist):
                self.persisted = new
            elif isinstance(e, Send):
                assert e.attempt > self.last_send and e.attempt == new.attempt
                self.last_send = e.attempt
                if isinstance(event, Timeout):
                    assert e.attempt <= self.cfg.max_retries
        if new != before:
            assert Persist() in effects
        if any(isinstance(e, (Invalid, Ignore)) for e in effects):
            assert new == before and len(effects) == 1
        assert new.attempt >= before.attempt
        self.state = new
        return effects

    @rule()
    def connected(self) -> None:
        ended = self.end_state is not None
        effects = self.feed(Connected())
        if not ended:
            self.connects += 1
            assert Send(self.state.attempt) in effects and self.state.status is IntentStatus.SENT

    @rule(status=st.sampled_from(["OK", "DUPLICATE", "REJECTED", "RETRY", "BOGUS"]))
    def acked(self, status: str) -> None:
        self.feed(Acked(status))

    @rule(by=st.integers(0, 40_000), to_due=st.booleans())
    def advance_time_and_timeout(self, by: int, to_due: bool) -> None:
        due = self.state.next_retry_at_ms
        self.now = due if to_due and due is not None and due > self.now else self.now + by
        self.feed(Timeout())

    @rule()
    def restart(self) -> None:
        self.state = self.persisted

    @invariant()
    def ended_never_changes(self) -> None:
        if self.end_state is not None:
            assert self.state == self.end_state
        elif self.state.status in (IntentStatus.ACKED, IntentStatus.DROPPED):
            self.end_state = self.state
            assert self.state.next_retry_at_ms is None

    @invariant()
    def attempts_are_bounded(self) -> None:
        assert self.state.attempt == self.last_send
        assert self.state.attempt <= self.cfg.max_retries + self.connects
        if self.state.status is IntentStatus.QUEUED:
            assert self.state.attempt == 0

    @invariant()
    def journal_is_current(self) -> None:
        # all but the timer, which may have moved later in memory only (a restart re-sends sooner, never
        # later than the journal says)
        assert self.persisted == replace(self.state, next_retry_at_ms=self.persisted.next_retry_at_ms)
        if self.persisted.next_retry_at_ms is not None and self.state.next_retry_at_ms is not None:
            assert self.persisted.next_retry_at_ms <= self.state.next_retry_at_ms


IntentMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestIntentMachine = IntentMachine.TestCase
