"""The conformance transcripts run against an EA implementation: the runner plays the Agent's side of a
session (its lines, in order) and checks the EA's lines against the transcript's.

What an EA's terminal and broker decide is not compared (``EA_VOLATILE``: prices, times, free text), and
the lines an EA sends on its own clock (quotes, snapshots, heartbeats) are skipped while the runner waits
for an answer. Ids the EA or its broker mint (trade_id, trace_id, event_id, tickets) are learned from its
lines and substituted into the later lines that name them. A master session needs trades placed in the
terminal: a ``Terminal`` driver does what the person did (open, modify, close) before each event the
transcript shows. An Agent line that the transcript shows crossing the EA's re-send of the same event
("the ack was late") is held back until the re-send has arrived. Only transcripts whose EA side is a
well-formed session are EA conformance; those made of an EA's garbage test the Agent only."""

from __future__ import annotations

import json
from typing import Any, Protocol

import msgspec
import trio

from echo.pipe.codec import EA_TO_AGENT, Decoded, LineDecoder
from tests.conformance_support import Step, mismatches

EVERYTHING = frozenset({""})
EA_VOLATILE: dict[str, frozenset[str]] = {
    "handshake": frozenset(
        {"client_semver", "client_id", "broker", "terminal_build", "capabilities", "symbols[].tick_value"}
    ),
    "trade_intent": frozenset({"price", "opened_at_ms", "strategy_id", "comment"}),
    "trade_close": frozenset({"price"}),
    "execution_result": frozenset({"executed_price", "executed_at_ms", "error_message"}),
    "close_result": frozenset({"close_price", "error_message"}),
    "modify_result": frozenset({"error_message"}),
    "pipe_delivery_ack": frozenset({"reason"}),
    "state_snapshot": EVERYTHING,
    "quotes": EVERYTHING,
    "heartbeat": EVERYTHING,
}
ON_ITS_OWN_CLOCK = frozenset({"quotes", "state_snapshot", "heartbeat"})
MINTED = ("trade_id", "trace_id", "event_id", "ticket", "new_ticket")
"""Fields whose values the EA or its broker create: learned, then substituted."""


class Terminal(Protocol):
    """The person at a master's terminal."""

    async def open(
        self, symbol: str, side: str, lots: float, sl: float | None, tp: float | None, magic: int
    ) -> None: ...

    async def modify(self, trade_id: str, ticket: int, sl: float | None, tp: float | None) -> None: ...

    async def close(self, trade_id: str, ticket: int, lots: float) -> None: ...


def ea_session(steps: list[Step]) -> bool:
    """Whether a transcript is a well-formed session an EA implementation can be held to."""
    return all(s.line is not None for s in steps) and any(s.sender == "ea" for s in steps)


def _event_key(payload: dict[str, Any]) -> Any:
    return payload.get("event_id") or payload.get("trade_id")


def _order(steps: list[Step]) -> list[Step]:
    """Steps in the order the runner plays them: an ack followed in the transcript by the EA's re-send of
    the same event goes out after that re-send."""
    out = list(steps)
    i = 0
    while i + 1 < len(out):
        a, b = out[i], out[i + 1]
        if (
            a.sender == "agent"
            and b.sender == "ea"
            and a.line is not None
            and b.line is not None
            and a.line["type"] == "trade_intent_ack"
            and b.line["payload"].get("attempt", 1) > 1
            and _event_key(a.line["payload"]) == _event_key(b.line["payload"])
        ):
            out[i], out[i + 1] = b, a
            i += 2
        else:
            i += 1
    return out


class _Ids:
    def __init__(self) -> None:
        self.seen: dict[Any, Any] = {}

    def map(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.map(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.map(v) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        return self.seen.get(value, value)

    def learn(self, expected: dict[str, Any], actual: dict[str, Any]) -> None:
        for key in MINTED:
            want, have = expected.get(key), actual.get(key)
            if want is not None and have is not None and want not in self.seen and want != have:
                self.seen[want] = have


async def play_agent(
    steps: list[Step], stream: trio.abc.Stream, terminal: Terminal | None = None
) -> list[str]:
    """Run the session against the EA on ``stream``; returns the differences ([] when it conforms)."""
    decoder = LineDecoder(EA_TO_AGENT)
    pending: list[Decoded] = []
    ids = _Ids()
    problems: list[str] = []

    async def next_line() -> Decoded:
        while not pending:
            data = await stream.receive_some()
            if not data:
                raise AssertionError("the EA closed the connection")
            for ev in decoder.feed(bytes(data)):
                assert isinstance(ev, Decoded), f"the EA sent a line the Agent refuses: {ev}"
                pending.append(ev)
        return pending.pop(0)

    for step in _order(steps):
        assert step.line is not None
        if step.sender == "agent":
            await stream.send_all(json.dumps(ids.map(step.line)).encode() + b"\n")
            continue
        expected = ids.map(step.line)
        if terminal is not None:
            await _act(terminal, expected)
        while True:
            got = await next_line()
            if got.type == expected["type"] or got.type not in ON_ITS_OWN_CLOCK:
                break
        actual = {
            "type": got.type,
            "timestamp_ms": got.timestamp_ms,
            "payload": msgspec.to_builtins(got.payload),
        }
        ids.learn(step.line["payload"], actual["payload"])
        diff = mismatches(ids.map(step.line), actual, EA_VOLATILE)
        if diff:
            problems.append(f"{step.path.name}:{step.lineno}: {diff}")
    return problems


async def _act(terminal: Terminal, line: dict[str, Any]) -> None:
    """What happened in the master's terminal before it sent ``line`` (a first send only)."""
    p = line["payload"]
    if p.get("attempt", 1) > 1:
        return
    if line["type"] == "trade_intent":
        await terminal.open(
            p["symbol"], p["side"], p["lot_size"], p.get("stop_loss"), p.get("take_profit"), p["magic_number"]
        )
    elif line["type"] == "trade_modify":
        await terminal.modify(p["trade_id"], p["ticket"], p.get("stop_loss"), p.get("take_profit"))
    elif line["type"] == "trade_close":
        await terminal.close(p["trade_id"], p["ticket"], p["lot_size"])
