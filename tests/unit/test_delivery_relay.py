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
    assert state == r.Relay(T, r.RelayStatus.WRITTEN, 1, T + 1500)
    assert effects == [r.Store(), r.Write(1), r.WakeAt(T + 1500)]


def test_arrival_for_an_offline_terminal_is_buffered_and_core_is_told() -> None:
    state, effects = step(None, r.Arrived(connected=False))
    assert state == r.Relay(T, r.RelayStatus.BUFFERED, 0, None)
    assert effects == [r.Store(), r.AckCore("AGENT_BUFFERED", "PENDING", "account not connected")]


def test_a_buffered_command_is_written_when_the_terminal_connects() -> None:
    state, _ = step(None, r.Arrived(connected=False))
    state, effects = step(state, r.TerminalConnected(), T + 10)
    assert state is not None and state.status is r.RelayStatus.WRITTEN and state.attempts == 1
    assert r.Write(1) in effects


def test_pipe_ack_ok_ends_the_agents_part() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.PipeAck("OK"))
    assert state is None
    assert effects == [r.Forget(), r.AckCore("PIPE_DELIVERED", "OK")]


def test_pipe_ack_failed_tells_core_with_the_terminals_reason() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.PipeAck("FAILED", "trading disabled"))
    assert state is None
    assert effects == [r.Forget(), r.AckCore("PIPE_DELIVERED", "FAILED", "trading disabled")]


def test_pipe_ack_retry_writes_again_after_the_backoff() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    state, effects = step(state, r.PipeAck("RETRY", "busy"), T + 5)
    assert effects == [r.WakeAt(T + 5 + 1500)]
    state, effects = step(state, r.Due(connected=True), T + 5 + 1500)
    assert r.Write(2) in effects


def test_no_pipe_ack_rewrites_until_max_retries_then_gives_up() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    now = T
    for attempt in (2, 3):
        assert state is not None and state.next_at_ms is not None
        now = state.next_at_ms
        state, effects = step(state, r.Due(connected=True), now)
        assert r.Write(attempt) in effects
    assert state is not None and state.next_at_ms is not None
    state, effects = step(state, r.Due(connected=True), state.next_at_ms)
    assert state is None
    assert effects == [
        r.Forget(),
        r.AckCore("AGENT_BUFFERED", "FAILED", "no pipe_delivery_ack after 3 writes"),
    ]


def test_a_timer_while_the_terminal_is_offline_buffers_without_using_an_attempt() -> None:
    state, _ = step(None, r.Arrived(connected=True))
    assert state is not None and state.next_at_ms is not None
    state, effects = step(state, r.Due(connected=False), state.next_at_ms)
    assert state == r.Relay(T, r.RelayStatus.BUFFERED, 1, None)
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
    st.builds(r.Arrived, st.booleans()),
    st.just(r.TerminalConnected()),
    st.builds(r.WriteFailed, st.sampled_from(["terminal too slow", "connection closing"])),
    st.builds(r.PipeAck, st.sampled_from(["OK", "RETRY", "FAILED"]), st.text(max_size=5)),
    st.just(r.ResultSeen()),
    st.builds(r.Due, st.booleans()),
    st.just(r.Dropped()),
)


@given(st.lists(st.tuples(EVENTS, st.integers(0, 5_000)), max_size=60))
def test_properties_over_any_input_sequence(seq: list[tuple[r.RelayInput, int]]) -> None:
    """Never raises; attempts never pass max_retries; a write is always stored and timed; the Agent tells Core
    at most one final outcome per command, and once it forgets a command only a new arrival brings it back."""
    state: r.Relay | None = None
    now = T
    for event, dt in seq:
        now += dt
        before = state
        state, effects = r.relay_transition(state, event, now, CFG)
        finals = [e for e in effects if isinstance(e, r.AckCore) and e.result != "PENDING"]
        assert len(finals) <= 1
        if finals:
            assert state is None and r.Forget() in effects
        if before is None and not isinstance(event, r.Arrived):
            assert state is None
        if state is not None:
            assert 0 <= state.attempts <= CFG.timing.max_retries
            writes = [e for e in effects if isinstance(e, r.Write)]
            if writes:
                assert writes[0].attempt == state.attempts
                assert r.Store() in effects and r.WakeAt(state.next_at_ms or -1) in effects
                assert state.status is r.RelayStatus.WRITTEN
            if state.status is r.RelayStatus.BUFFERED:
                assert state.next_at_ms is None
