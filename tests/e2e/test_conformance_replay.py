"""The conformance transcripts replayed against the real Agent (with the real Core behind it), as
``conformance/PROTOCOL.md`` section 10.3 describes: the test plays the EA, and for the commands Core
originates (which need a master trade to exist) it stands in for Core on the transport."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, StoreConfig
from echo.pipe.codec import AGENT_TO_EA, EA_TO_AGENT, Decoded, DecodeFailure, LineDecoder, decode_line
from tests.conformance_support import Step, load_transcript, mismatches, transcript_paths
from tests.e2e.world import start_copier

pytestmark = pytest.mark.e2e

CORE_ORIGINATED = frozenset({"execute_order", "close_order", "modify_order"})


class Player:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = LineDecoder(AGENT_TO_EA)
        self.ready: list[dict[str, object]] = []

    async def next_line(self) -> dict[str, object]:
        while not self.ready:
            data = await self.stream.receive_some()
            assert data, "the agent closed the connection"
            for event in self.decoder.feed(data):
                assert isinstance(event, Decoded), f"agent sent an undecodable line: {event}"
                raw = json.loads(json.dumps({"type": event.type, "payload": _plain(event.payload)}))
                if raw["type"] != "heartbeat":
                    self.ready.append(raw)
        return self.ready.pop(0)


def _plain(obj: object) -> object:
    import msgspec

    return msgspec.to_builtins(obj)


def _matches(step: Step, got: dict[str, object]) -> bool:
    if step.expect_error is not None:
        payload = got.get("payload")
        return (
            got.get("type") == "error"
            and isinstance(payload, dict)
            and payload.get("code") == step.expect_error
            and (step.ref_type is None or payload.get("ref_type") == step.ref_type)
        )
    assert step.line is not None
    return not mismatches(step.line, got)


@pytest.mark.parametrize("path", transcript_paths(), ids=lambda p: p.name)
async def test_transcript_replays_against_the_agent(
    path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    steps = load_transcript(path)
    listener = MemoryPipeListener()
    config = Config(agent=AgentConfig(agent_id="agent-host1"), store=StoreConfig("memory://"))
    # the copier's clock starts when the session was recorded: its trade ids are recent to it
    clock = TrioClock(epoch_ms=min(int(s.line["timestamp_ms"]) for s in steps if s.line is not None))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            copier = await start_copier(nursery, config, store=MemoryStore(), listener=listener, clock=clock)
            player = Player(await listener.connect())
            account: str | None = None
            sent: set[str | None] = set()
            i = 0
            while i < len(steps):
                step = steps[i]
                if step.sender == "ea":
                    if step.type == "handshake":
                        account = str(step.payload["account_id"])
                    await player.stream.send_all(step.wire())
                    i += 1
                    continue
                run: list[Step] = []
                while i < len(steps) and steps[i].sender == "agent":
                    run.append(steps[i])
                    i += 1
                expected: list[Step] = []
                for s in run:
                    if s.type in CORE_ORIGINATED:
                        # stand in for Core: send exactly the transcript's command to the account; a
                        # command sent again goes no sooner than Core would send it (PROTOCOL.md X13a)
                        assert account is not None
                        event = decode_line(json.dumps(s.line).encode(), AGENT_TO_EA)
                        assert isinstance(event, Decoded), event
                        command_id = getattr(event.payload, "command_id", None)
                        if command_id in sent:
                            await trio.sleep(config.delivery.ack_timeout_ms / 1000)
                        sent.add(command_id)
                        await copier.core._hub.send("agent-host1", m.ToAccount(account, event.payload))
                    expected.append(s)
                received = [await player.next_line() for _ in expected]
                for s in expected:
                    hit = next((g for g in received if _matches(s, g)), None)
                    assert hit is not None, f"{s.where}: no match among {received}"
                    received.remove(hit)
            # after the last step nothing else (no error) arrives
            await trio.testing.wait_all_tasks_blocked()
            leftover = [line for line in player.ready if line["type"] == "error"]
            assert not leftover, leftover
            nursery.cancel_scope.cancel()


def test_every_ea_line_of_the_transcripts_is_accepted_by_the_agent_codec() -> None:
    for path in transcript_paths():
        for step in load_transcript(path):
            if step.sender == "ea" and step.line is not None:
                event = decode_line(step.wire().rstrip(b"\n"), EA_TO_AGENT)
                assert not isinstance(event, DecodeFailure), (step.where, event)
