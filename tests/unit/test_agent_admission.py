"""The Agent's synchronous parts without trio: who may take an account (``admission``) and what the
command book does with the relay rules' effects (``book``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from echo.adapters.ledger.memory import MemoryLedger
from echo.delivery import relay
from echo.delivery.machine import Settings
from echo.domain import messages as m
from echo.domain.errors import ProtocolError
from echo.domain.ids import uuid7
from echo.domain.types import Role, Side
from echo.pipe.codec import encode
from echo.services.agent import admission
from echo.services.agent.book import CommandBook

NOW = 1_700_000_000_000
TERMINAL = "T" * 16
OTHER = "U" * 16
BEAT = 1000


@dataclass
class Peer:
    account_id: str | None = None
    terminal_id: str = ""
    last_seen_ms: int = NOW
    broken: bool = False


def hs(
    account: str = "51001", *, terminal_id: str = TERMINAL, token: str = "", version: int = 2
) -> m.Handshake:
    return m.Handshake(account, Role.SLAVE, version, terminal_id=terminal_id, token=token)


def judge(conn: Peer, h: m.Handshake, *, token: str = "", live: Peer | None = None) -> admission.Verdict:
    return admission.judge_handshake(conn, h, token, live, NOW, BEAT)


def test_a_first_handshake_is_accepted_with_nothing_to_replace() -> None:
    assert judge(Peer(), hs()) == admission.Accept()


def test_a_connection_keeps_its_account() -> None:
    verdict = judge(Peer(account_id="51002"), hs("51001"))
    assert isinstance(verdict, admission.Reject)
    assert verdict.failure.code is ProtocolError.ERR_PROTOCOL_INVALID_VALUE


def test_a_newer_protocol_is_refused_with_an_error_reply() -> None:
    verdict = judge(Peer(), hs(version=m.PROTOCOL_VERSION + 1))
    assert isinstance(verdict, admission.Reject)
    assert verdict.failure.code is ProtocolError.ERR_PROTOCOL_VERSION_UNSUPPORTED


@pytest.mark.parametrize(("presented", "why"), [("", "must carry"), ("wrong", "is not this agent's")])
def test_the_agents_token_is_required(presented: str, why: str) -> None:
    verdict = judge(Peer(), hs(token=presented), token="secret")
    assert isinstance(verdict, admission.Refuse) and verdict.counter == "handshakes_unauthorized"
    assert verdict.code is ProtocolError.ERR_PROTOCOL_UNAUTHORIZED and why in verdict.why
    assert judge(Peer(), hs(token="secret"), token="secret") == admission.Accept()


def test_a_live_account_gives_way_only_to_its_own_terminal() -> None:
    live = Peer("51001", TERMINAL)
    verdict = judge(Peer(), hs(terminal_id=OTHER), live=live)
    assert isinstance(verdict, admission.Refuse) and verdict.counter == "handshakes_account_in_use"
    assert verdict.code is ProtocolError.ERR_PROTOCOL_ACCOUNT_IN_USE
    assert judge(Peer(), hs(terminal_id=""), live=live) == verdict  # no terminal_id proves nothing
    assert judge(Peer(), hs(), live=live) == admission.Accept("same terminal_id")


def test_a_dead_connection_gives_way_to_any_terminal() -> None:
    # the EAs' own heartbeat (2 s) bounds a shorter heartbeat_interval_ms
    quiet = admission.DEAD_AFTER_BEATS * admission.EA_HEARTBEAT_MS
    assert isinstance(
        judge(Peer(), hs(terminal_id=OTHER), live=Peer("51001", last_seen_ms=NOW - quiet)), admission.Refuse
    )
    silent = Peer("51001", last_seen_ms=NOW - quiet - 1)
    assert judge(Peer(), hs(terminal_id=OTHER), live=silent) == admission.Accept(
        f"no line for {quiet + 1} ms"
    )
    assert judge(Peer(), hs(terminal_id=OTHER), live=Peer("51001", broken=True)) == admission.Accept(
        "broken write"
    )


def test_a_reconnecting_handshake_on_its_own_connection_replaces_nothing() -> None:
    conn = Peer("51001", OTHER)
    assert judge(conn, hs(), live=conn) == admission.Accept()


@pytest.mark.parametrize(
    ("account", "role", "kind", "code"),
    [
        (None, None, "trade_intent", ProtocolError.ERR_PROTOCOL_NOT_HANDSHAKEN),
        ("1", Role.MASTER, "execution_result", ProtocolError.ERR_PROTOCOL_UNEXPECTED_MESSAGE),
        ("1", Role.SLAVE, "trade_intent", ProtocolError.ERR_PROTOCOL_UNEXPECTED_MESSAGE),
    ],
)
def test_the_gate_refuses_what_the_connection_may_not_send(
    account: str | None, role: Role | None, kind: str, code: ProtocolError
) -> None:
    failure = admission.gate(account, role, kind)
    assert not isinstance(failure, str) and failure.code is code and failure.ref_type == kind


@pytest.mark.parametrize(
    ("role", "kinds"), [(Role.MASTER, admission.MASTER_TYPES), (Role.SLAVE, admission.SLAVE_TYPES)]
)
def test_the_gate_passes_a_roles_own_messages_with_the_account(role: Role, kinds: frozenset[str]) -> None:
    assert all(admission.gate("51001", role, kind) == "51001" for kind in kinds)


# --------------------------------------------------------------------------------------------- the book


class Timers:
    def __init__(self) -> None:
        self.wakes: dict[str, int] = {}

    def at(self, at_ms: int, key: str) -> None:
        self.wakes[key] = at_ms

    def discard(self, key: str) -> None:
        self.wakes.pop(key, None)


def order(n: int) -> m.ExecuteOrder:
    return m.ExecuteOrder(
        uuid7(NOW, bytes([n]) * 10),
        uuid7(NOW, bytes([100 + n]) * 10),
        "ab" * 16,
        "EURUSD",
        Side.BUY,
        0.1,
        7,
        "c",
    )


Writes = list[tuple[str, m.ToEA]]


def book(
    writes: Writes, fail: str | None = None, ledger: MemoryLedger | None = None
) -> tuple[CommandBook, MemoryLedger, Timers]:
    """A book on a real in-memory ledger; its terminal writes land in ``writes`` (failing with ``fail``)."""
    ledger, timers = ledger or MemoryLedger(), Timers()

    def write(account: str, message: m.ToEA, now_ms: int, line: bytes | None) -> str | None:
        # a line encoded beforehand must be the message's line of now
        assert line is None or line == encode(message, now_ms), (line, message)
        writes.append((account, message))
        return fail

    settings = relay.RelaySettings(Settings(1000, 500, 3), 60_000)
    return CommandBook(ledger, timers, write, lambda: settings, {}), ledger, timers


def test_a_command_for_an_offline_terminal_is_held_in_the_ledger_and_core_told_pending() -> None:
    writes: Writes = []
    b, ledger, _ = book(writes)
    b.arrived("51001", order(1), connected=False, now_ms=NOW)
    b.flush_ledger()
    assert writes == [] and [e.command_id for e in ledger.load()] == [order(1).command_id]
    assert [(a.stage, a.result) for a in b.take_acks()] == [(m.AckStage.AGENT_BUFFERED, m.AckResult.PENDING)]
    assert b.take_acks() == []


def test_a_write_that_fails_is_fed_back_and_the_command_waits() -> None:
    writes: Writes = []
    b, ledger, _ = book(writes, fail="terminal too slow")
    b.arrived("51001", order(1), connected=True, now_ms=NOW)
    b.flush_ledger()
    assert [msg for _, msg in writes] == [order(1)]
    assert order(1).command_id in b.held and len(ledger.load()) == 1
    assert [(a.stage, a.result) for a in b.take_acks()] == [(m.AckStage.AGENT_BUFFERED, m.AckResult.PENDING)]


def test_a_pipe_ack_releases_the_ledger_and_keeps_the_numbers_until_core_is_done() -> None:
    writes: Writes = []
    b, ledger, timers = book(writes)
    cid = order(1).command_id
    b.arrived("51001", order(1), connected=True, now_ms=NOW)
    b.relay(cid, relay.PipeAck("OK"), NOW + 5)
    b.flush_ledger()
    assert ledger.load() == [] and cid in b.settled and cid not in b.held and cid in timers.wakes
    b.relay(cid, relay.ResultSeen(), NOW + 6)
    assert cid not in b.settled and cid not in timers.wakes


def test_a_command_sent_for_another_account_is_not_taken() -> None:
    writes: Writes = []
    b, _, _ = book(writes)
    b.arrived("51001", order(1), connected=False, now_ms=NOW)
    b.take_acks()
    b.arrived("51002", order(1), connected=True, now_ms=NOW)
    assert writes == [] and b.held[order(1).command_id].account_id == "51001" and b.take_acks() == []


def test_held_commands_come_back_from_the_ledger_and_are_numbered_past_their_last_write() -> None:
    writes: Writes = []
    first, ledger, _ = book(writes)
    first.arrived("51001", order(1), connected=True, now_ms=NOW)  # written once: attempt 1
    first.flush_ledger()
    rewrites: Writes = []
    again, _, _ = book(rewrites, ledger=ledger)  # a new Agent on the same ledger
    again.load()
    held = again.held[order(1).command_id]
    assert held.account_id == "51001" and held.command == order(1) and held.state.attempt == 1
    again.relay(order(1).command_id, relay.TerminalConnected(), NOW + 10)
    assert [(account, msg.attempt) for account, msg in rewrites] == [("51001", 2)]
