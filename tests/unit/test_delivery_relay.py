"""The Agent's hop (``echo.delivery.relay``): the table directly, then properties over random inputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.delivery import relay as r
from echo.delivery.machine import Settings

CFG = r.RelaySettings(Settings(ack_timeout_ms=1000, retry_backoff_ms=500, max_retries=3), hold_ms=60_000)
T = 1_000_000


def step(
    state: r.Relay | None, event: r.RelayInput, now: int = T
) -> tuple[r.Relay | None, list[r.RelayEffect]]:
    return r.relay_transition(state, event, now, CFG)


def test_arrival_for_a_connected_terminal_is_written_with_a_timer() -> None:
    state, effects = step(None, r.Arrived(connected=True))
    assert state == r.Relay(T, r.RelayStatus.WRITTEN, 1, T + 1500, writes=1, written_at_ms=T, queued=True)
    assert effects == [r.Store(), r.Write(1), r.WakeAt(T + 1500)]


def left(state: r.Relay | None, now: int = T) -> r.Relay | None:
    """The line left the connection's outbox at ``now``."""
    state, _ = step(state, r.Written(), now)
    return state


def test_arrival_for_an_offline_terminal_is_buffered_and_core_is_told() -> None:
    state, effects = step(None, r.Arrived(connected=False))
    assert state == r.Relay(T, r.RelayStatus.BUFFERED, 0, None)
    assert effects == [r.Store(), r.AckCore("AGENT_BUFFERED", "PENDING", "account not connected")]


def test_a_buffered_command_is_written_when_the_terminal_connects() -> None:
    state, _ = step(None, r.Arrived(connected=False))
    state, effects = step(state, r.TerminalConnected(), T + 10)
    assert state is not None and state.status is r.RelayStatus.WRITTEN and state.attempt == 1
    assert r.Write(1) in effects


def test_a_command_loaded_from_the_ledger_is_numbered_past_its_last_write() -> None:
    loaded = r.Relay(T, r.RelayStatus.BUFFERED, attempt=3)
    state, effects = step(loaded, r.TerminalConnected(), T + 10)
    assert r.Write(4) in effects and state is not None and state.attempt == 4


def test_pipe_ack_ok_ends_the_agents_part_but_keeps_its_numbers() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.PipeAck("OK"))
    assert state is not None and state.status is r.RelayStatus.IDLE and state.attempt == 1
    assert effects == [r.Release(), r.AckCore("PIPE_DELIVERED", "OK"), r.WakeAt(T + CFG.hold_ms)]


def test_pipe_ack_failed_tells_core_with_the_terminals_reason() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.PipeAck("FAILED", "trading disabled"))
    assert state is not None and state.status is r.RelayStatus.IDLE
    assert effects == [
        r.Release(),
        r.AckCore("PIPE_DELIVERED", "FAILED", "trading disabled"),
        r.WakeAt(T + CFG.hold_ms),
    ]


def test_pipe_ack_retry_writes_again_after_retry_backoff_ms() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state = left(state)
    state, effects = step(state, r.PipeAck("RETRY", "busy"), T + 5)
    assert effects == [r.WakeAt(T + 5 + CFG.timing.retry_backoff_ms)]
    same, effects = step(state, r.Due(connected=True), T + 5 + CFG.timing.retry_backoff_ms - 1)
    assert same == state and effects == [r.Nothing("timer not due")]
    state, effects = step(state, r.Due(connected=True), T + 5 + CFG.timing.retry_backoff_ms)
    assert r.Write(2) in effects


def test_no_pipe_ack_rewrites_with_a_higher_attempt_until_max_retries_then_gives_up() -> None:
    state = left(step(None, r.Arrived(connected=True))[0])
    now = T
    for attempt in (2, 3):
        assert state is not None and state.next_at_ms is not None
        now = state.next_at_ms
        state, effects = step(state, r.Due(connected=True), now)
        assert r.Write(attempt) in effects
        state = left(state, now)
    assert state is not None and state.next_at_ms is not None
    state, effects = step(state, r.Due(connected=True), state.next_at_ms)
    assert state is not None and state.status is r.RelayStatus.IDLE and state.attempt == 3
    assert effects[:2] == [
        r.Release(),
        r.AckCore("AGENT_BUFFERED", "FAILED", "no pipe_delivery_ack after 3 writes"),
    ]


def test_core_sending_again_while_the_agent_waits_on_its_write_writes_nothing() -> None:
    """One writer: Core's re-send (its own timer) does not put a second copy on the pipe."""
    state = left(step(None, r.Arrived(connected=True))[0])
    state, effects = step(state, r.Arrived(connected=True, attempt=2), T + 1500)
    assert not [e for e in effects if isinstance(e, r.Write)]
    assert state is not None and state.affirmed_ms == T + 1500 and state.floor == 2
    # the Agent's own timer writes it, numbered at least as Core's send
    state, effects = step(state, r.Due(connected=True), T + 1500)
    assert r.Write(2) in effects


def test_core_attempt_is_a_floor_for_the_next_write() -> None:
    state, _ = step(None, r.Arrived(connected=True, attempt=5))
    assert state is not None and state.attempt == 5
    state, _ = step(state, r.Arrived(connected=True, attempt=7), T + 10)
    state = left(state, T + 10)
    assert state is not None and state.next_at_ms is not None
    state, effects = step(state, r.Due(connected=True), state.next_at_ms)
    assert r.Write(7) in effects


def test_core_asking_again_after_delivery_is_written_once_numbered_past_the_last_write() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, _ = step(state, r.PipeAck("OK"), T + 1)
    # a re-send that crossed the pipe ack: the write is fresh, nothing goes out
    state, effects = step(state, r.Arrived(connected=True, attempt=2), T + 2)
    assert not [e for e in effects if isinstance(e, r.Write)]
    # the result did not come within Core's delay: a new round of writes
    now = T + CFG.timing.ack_timeout_ms
    state, effects = step(state, r.Arrived(connected=True, attempt=2), now)
    assert state is not None and state.status is r.RelayStatus.WRITTEN and state.writes == 1
    assert effects == [r.Store(), r.Write(2), r.WakeAt(now + 1500)]


def test_an_idle_command_is_forgotten_when_core_stops_asking() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, _ = step(state, r.PipeAck("OK"), T + 1)
    same, effects = step(state, r.Due(connected=True), T + CFG.hold_ms - 1)
    assert same == state and effects == [r.Nothing("timer not due")]
    assert step(state, r.Due(connected=True), T + CFG.hold_ms) == (None, [r.Forget()])


def test_an_idle_command_is_not_written_when_its_terminal_reconnects() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, _ = step(state, r.PipeAck("OK"), T + 1)
    same, effects = step(state, r.TerminalConnected(), T + 5000)
    assert same == state and len(effects) == 1 and isinstance(effects[0], r.Nothing)


def test_a_timer_while_the_terminal_is_offline_buffers_without_using_an_attempt() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    assert state is not None and state.next_at_ms is not None
    state, effects = step(state, r.Due(connected=False), state.next_at_ms)
    assert state == r.Relay(T, r.RelayStatus.BUFFERED, 1, None, writes=1, written_at_ms=T)
    assert r.AckCore("AGENT_BUFFERED", "PENDING", "account not connected") in effects


def test_an_early_or_stale_timer_does_nothing() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    same, effects = step(state, r.Due(connected=True), T + 1)
    assert same == state and effects == [r.Nothing("timer not due")]


def test_a_write_failure_buffers_the_command() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.WriteFailed("terminal too slow"))
    assert state is not None and state.status is r.RelayStatus.BUFFERED
    assert r.AckCore("AGENT_BUFFERED", "PENDING", "terminal too slow") in effects


def test_a_result_or_a_drop_forgets_the_command_silently() -> None:
    for event in (r.ResultSeen(), r.Dropped()):
        state, _ = step(None, r.Arrived(connected=True))
        assert step(state, event) == (None, [r.Forget()])


def test_a_command_held_past_hold_ms_is_not_written_when_its_terminal_returns() -> None:
    state, _ = step(None, r.Arrived(connected=False))
    state, effects = step(state, r.TerminalConnected(), T + CFG.hold_ms + 1)
    assert state is None
    assert effects[0] == r.Forget()
    assert isinstance(effects[1], r.AckCore) and effects[1].result == "FAILED"


def test_core_sending_again_renews_the_hold() -> None:
    state, _ = step(None, r.Arrived(connected=False))
    state, _ = step(state, r.Arrived(connected=False), T + CFG.hold_ms)
    state, effects = step(state, r.TerminalConnected(), T + CFG.hold_ms + 10)
    assert r.Write(1) in effects


@pytest.mark.parametrize(
    "event",
    [r.TerminalConnected(), r.WriteFailed("x"), r.PipeAck("OK"), r.ResultSeen(), r.Due(True), r.Dropped()],
)
def test_inputs_for_a_command_the_ledger_does_not_hold_change_nothing(event: r.RelayInput) -> None:
    state, effects = step(None, event)
    assert state is None
    assert len(effects) == 1 and isinstance(effects[0], r.Nothing)


EVENTS = st.one_of(
    st.builds(r.Arrived, st.booleans(), st.integers(1, 8)),
    st.just(r.TerminalConnected()),
    st.builds(r.WriteFailed, st.sampled_from(["terminal too slow", "connection closing"])),
    st.builds(r.PipeAck, st.sampled_from(["OK", "RETRY", "FAILED"]), st.text(max_size=5)),
    st.just(r.ResultSeen()),
    st.builds(r.Due, st.booleans()),
    st.just(r.Dropped()),
)


@given(st.lists(st.tuples(EVENTS, st.integers(0, 5_000)), max_size=60))
def test_properties_over_any_input_sequence(seq: list[tuple[r.RelayInput, int]]) -> None:
    """Never raises; writes per round never pass max_retries; a write is always stored and timed; every
    write carries a higher attempt than the one before and never less than Core's latest send; Core
    sending again never writes within ack_timeout_ms of the last write (unless that write failed); the
    Agent tells Core at most one final outcome per step, and once it forgets a command only a new arrival
    brings it back."""
    state: r.Relay | None = None
    now = T
    last_write: tuple[int, int] | None = None  # (attempt, at) while the entry lives
    core_attempt = 0
    for event, dt in seq:
        now += dt
        before = state
        state, effects = r.relay_transition(state, event, now, CFG)
        finals = [e for e in effects if isinstance(e, r.AckCore) and e.result != "PENDING"]
        assert len(finals) <= 1
        if finals:
            assert state is None or state.status is r.RelayStatus.IDLE
            assert r.Forget() in effects or r.Release() in effects
        if before is None and not isinstance(event, r.Arrived):
            assert state is None
        if isinstance(event, r.Arrived):
            core_attempt = event.attempt if before is None else max(core_attempt, event.attempt)
        writes = [e for e in effects if isinstance(e, r.Write)]
        assert len(writes) <= 1
        if writes:
            assert state is not None
            if last_write is not None:
                assert writes[0].attempt > last_write[0]
                if isinstance(event, r.Arrived) and before is not None:
                    assert before.status is r.RelayStatus.BUFFERED or now - last_write[1] >= 1000
            assert writes[0].attempt >= core_attempt
            last_write = (writes[0].attempt, now)
        if state is None:
            last_write = None
        else:
            assert 0 <= state.writes <= CFG.timing.max_retries
            if writes:
                assert writes[0].attempt == state.attempt
                assert r.Store() in effects and r.WakeAt(state.next_at_ms or -1) in effects
                assert state.status is r.RelayStatus.WRITTEN
            if state.status is r.RelayStatus.BUFFERED:
                assert state.next_at_ms is None
            if state.status is r.RelayStatus.IDLE:
                assert state.next_at_ms is not None


# ------------------------------------------------------------------ counted from when it left; busy terminals


def test_the_wait_for_the_pipe_ack_counts_from_when_the_line_left() -> None:
    """Queued at T, left the outbox at T + 1400 (the terminal was reading earlier lines): no re-write at
    T + 1500, the next one is due a whole delay after it left."""
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.Written(), T + 1400)
    assert effects == [r.WakeAt(T + 2900)]
    assert state is not None and state.written_at_ms == T + 1400 and not state.queued
    same, effects = step(state, r.Due(connected=True), T + 1500)
    assert same == state and effects == [r.Nothing("timer not due")]
    _, effects = step(state, r.Due(connected=True), T + 2900)
    assert r.Write(2) in effects


def test_a_line_still_in_the_outbox_is_not_written_again() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.Due(connected=True), T + 1500)
    assert not [e for e in effects if isinstance(e, r.Write)]
    assert effects == [r.WakeAt(T + 1500 + CFG.timing.ack_timeout_ms)]
    assert state is not None and state.queued and state.writes == 1


def test_a_busy_terminal_holds_the_command_without_using_a_write() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.Busy(), T)
    assert state is not None and state.status is r.RelayStatus.BUFFERED and state.writes == 0
    assert effects == [
        r.Store(),
        r.AckCore("AGENT_BUFFERED", "PENDING", "terminal busy: held until it reads"),
    ]
    # room again: written, numbered past the write that found no room
    state, effects = step(state, r.TerminalConnected(), T + 10)
    assert state is not None and state.status is r.RelayStatus.WRITTEN and r.Write(2) in effects


@given(
    events=st.lists(
        st.sampled_from(
            [
                r.Arrived(connected=True),
                r.Busy(),
                r.Written(),
                r.TerminalConnected(),
                r.Due(connected=True),
                r.PipeAck("RETRY"),
            ]
        ),
        max_size=40,
    ),
    gaps=st.lists(st.integers(min_value=0, max_value=5000), min_size=40, max_size=40),
)
def test_busy_and_written_keep_the_relay_promises(events: list[r.RelayInput], gaps: list[int]) -> None:
    """Whatever order a busy terminal's inputs come in: attempts only rise, writes never pass
    max_retries, and a line waiting in the outbox is never written a second time by the timer."""
    state: r.Relay | None = None
    now = T
    for event, gap in zip(events, gaps, strict=False):
        now += gap
        before = state
        state, effects = r.relay_transition(state, event, now, CFG)
        if state is None:
            if before is not None:
                break
            continue
        if before is not None:
            assert state.attempt >= before.attempt
            if isinstance(event, r.Due) and before.queued and before.status is r.RelayStatus.WRITTEN:
                assert not [e for e in effects if isinstance(e, r.Write)]
        assert state.writes <= CFG.timing.max_retries
