"""Static checks of the conformance transcripts: every line is valid in its direction and survives a round
trip through the codec, every bad line fails with exactly the error the transcript expects, and the sessions
keep the protocol's id and ack rules. The end-to-end replay against a running Agent reuses the same loader."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from echo.domain.errors import ProtocolError
from echo.pipe.codec import (
    AGENT_TO_EA,
    EA_TO_AGENT,
    PAYLOADS,
    Decoded,
    DecodeFailure,
    LineDecoder,
    decode_line,
    encode,
)
from tests.conformance_support import (
    CONFORMANCE_DIR,
    SESSION_RULE_CODES,
    Step,
    TranscriptError,
    load_transcript,
    mismatches,
    transcript_paths,
)

PATHS = transcript_paths()
REQUIRED = {"slave_session.jsonl", "master_session.jsonl", "bad_input.jsonl", "reject_before_handshake.jsonl"}
ACCEPT = {"ea": EA_TO_AGENT, "agent": AGENT_TO_EA}
COMMAND_RESULT = {
    "execute_order": "execution_result",
    "close_order": "close_result",
    "modify_order": "modify_result",
}
MASTER_EVENTS = {"trade_intent", "trade_close", "trade_modify"}
BEFORE_HANDSHAKE = {"heartbeat", "error"}
"""Besides handshake, the EA messages the Agent takes before a handshake (without a reply)."""

by_name = pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])


def _decode(step: Step) -> Decoded:
    event = decode_line(step.wire().rstrip(b"\n"), ACCEPT[step.sender])
    assert isinstance(event, Decoded), f"{step.where}: {event}"
    return event


def _lines(steps: list[Step]) -> Iterator[tuple[Step, Decoded]]:
    for step in steps:
        if step.kind == "line":
            yield step, _decode(step)


def _is_superset(encoded: Any, original: Any) -> bool:
    """Every value of ``original`` is in ``encoded``; keys only ``encoded`` has hold defaults."""
    if isinstance(original, dict):
        return isinstance(encoded, dict) and all(
            k in encoded and _is_superset(encoded[k], v) for k, v in original.items()
        )
    if isinstance(original, list):
        return (
            isinstance(encoded, list)
            and len(encoded) == len(original)
            and all(_is_superset(e, o) for e, o in zip(encoded, original, strict=True))
        )
    return bool(encoded == original and isinstance(encoded, bool) == isinstance(original, bool))


def test_the_required_transcripts_exist() -> None:
    assert {p.name for p in PATHS} >= REQUIRED


@by_name
def test_transcript_loads(path: Path) -> None:
    steps = load_transcript(path)
    assert steps


@by_name
def test_every_line_decodes_in_its_direction_and_round_trips(path: Path) -> None:
    for step, decoded in _lines(load_transcript(path)):
        assert decoded.type == step.type
        assert decoded.timestamp_ms == step.line["timestamp_ms"]  # type: ignore[index]
        again = encode(decoded.payload, decoded.timestamp_ms)
        assert again.endswith(b"\n") and again.count(b"\n") == 1
        assert _is_superset(json.loads(again), step.line), f"{step.where}: information lost in the round trip"
        redecoded = decode_line(again.rstrip(b"\n"), ACCEPT[step.sender])
        assert isinstance(redecoded, Decoded)
        assert redecoded.payload == decoded.payload, step.where


@by_name
def test_raw_lines_fail_with_exactly_the_expected_code(path: Path) -> None:
    steps = load_transcript(path)
    for i, step in enumerate(steps):
        if step.kind != "raw":
            continue
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        events = LineDecoder(EA_TO_AGENT).feed(step.wire())
        if nxt is not None and nxt.kind == "expect_error":
            assert len(events) == 1, f"{step.where}: {events}"
            failure = events[0]
            assert isinstance(failure, DecodeFailure), f"{step.where}: decoded although an error is expected"
            assert failure.code.value == nxt.expect_error, f"{step.where}: {failure}"
            if nxt.ref_type is not None:
                assert failure.ref_type == nxt.ref_type, f"{step.where}: {failure}"
        else:
            assert all(isinstance(e, Decoded) for e in events), f"{step.where}: {events}"
            assert len(events) <= 1


@by_name
def test_expected_errors_follow_the_right_kind_of_line(path: Path) -> None:
    steps = load_transcript(path)
    for i, step in enumerate(steps):
        if step.kind != "expect_error":
            continue
        before = steps[i - 1]
        if step.expect_error in SESSION_RULE_CODES:
            # a session rule of the Agent, not a codec failure: the refused line itself is valid
            assert before.kind == "line", f"{step.where}: a session-rule error follows a valid line"
            decoded = _decode(before)
            if step.ref_type is not None:
                assert decoded.type == step.ref_type
        else:
            assert before.kind == "raw", f"{step.where}: codec errors follow raw lines"


@by_name
def test_handshake_rules(path: Path) -> None:
    """Before an accepted handshake every EA message except heartbeat and error is refused with
    NOT_HANDSHAKEN, a handshake is refused only with VERSION_UNSUPPORTED, and after it NOT_HANDSHAKEN never
    appears."""
    steps = load_transcript(path)
    handshaken = False
    for i, step in enumerate(steps):
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        refused = nxt.expect_error if nxt is not None and nxt.kind == "expect_error" else None
        if step.sender != "ea" or step.kind != "line":
            if step.kind == "raw" and not handshaken:
                assert refused is not None, f"{step.where}: a raw line before the handshake"
            continue
        if step.type == "handshake":
            if refused is None:
                assert step.payload["protocol_version"] == 2
                handshaken = True
            else:
                assert refused == ProtocolError.ERR_PROTOCOL_VERSION_UNSUPPORTED.value
        elif step.type in BEFORE_HANDSHAKE:
            assert refused is None, step.where
        elif handshaken:
            assert refused != ProtocolError.ERR_PROTOCOL_NOT_HANDSHAKEN.value, step.where
        else:
            assert refused == ProtocolError.ERR_PROTOCOL_NOT_HANDSHAKEN.value, (
                f"{step.where}: before handshake"
            )
    assert handshaken, f"{path.name}: the session never completes a handshake"


@by_name
def test_agent_sends_config_and_registration_after_each_accepted_handshake(path: Path) -> None:
    steps = load_transcript(path)
    for i, step in enumerate(steps):
        if step.sender == "ea" and step.type == "handshake":
            following = steps[i + 1 : i + 3]
            if following and following[0].kind == "expect_error":
                continue
            assert {s.type for s in following} == {"delivery_config", "symbol_registration_result"}, (
                step.where
            )
            registration = next(s for s in following if s.type == "symbol_registration_result")
            assert registration.payload["account_id"] == step.payload["account_id"]
            assert registration.payload["pipe_role"] == step.payload["role"]


@by_name
def test_results_and_delivery_acks_answer_earlier_commands(path: Path) -> None:
    commands: dict[str, dict[str, Any]] = {}
    command_type: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    for step, decoded in _lines(load_transcript(path)):
        payload = step.payload
        if decoded.type in COMMAND_RESULT:
            cid = payload["command_id"]
            if cid in commands:
                # a re-sent command: same command, next attempt
                first = {k: v for k, v in commands[cid].items() if k != "attempt"}
                assert {k: v for k, v in payload.items() if k != "attempt"} == first, step.where
                assert payload["attempt"] > commands[cid]["attempt"], step.where
            commands[cid], command_type[cid] = payload, decoded.type
        elif decoded.type == "pipe_delivery_ack":
            cid = payload["command_id"]
            assert cid in commands, f"{step.where}: ack for an unknown command"
            assert payload["trace_id"] == commands[cid]["trace_id"]
        elif decoded.type in COMMAND_RESULT.values():
            cid = payload["command_id"]
            assert cid in commands, f"{step.where}: result for an unknown command"
            assert COMMAND_RESULT[command_type[cid]] == decoded.type, step.where
            for key in ("trade_id", "trace_id"):
                assert payload[key] == commands[cid][key], step.where
            if cid in results:
                assert payload == results[cid], f"{step.where}: a repeated command must get the stored result"
            results[cid] = payload
    assert set(results) == set(commands), f"{path.name}: every command gets a result"


@by_name
def test_master_events_are_acked_and_resent_with_the_same_ids(path: Path) -> None:
    events: dict[tuple[str, str | None], dict[str, Any]] = {}
    acked: set[tuple[str, str | None]] = set()
    for step, decoded in _lines(load_transcript(path)):
        payload = step.payload
        if decoded.type in MASTER_EVENTS:
            key = (payload["trade_id"], payload.get("event_id"))
            if key in events:
                previous = events[key]
                assert payload["attempt"] == previous["attempt"] + 1, f"{step.where}: a re-send is attempt+1"
                same = {k: v for k, v in payload.items() if k != "attempt"}
                assert same == {k: v for k, v in previous.items() if k != "attempt"}, step.where
            events[key] = payload
        elif decoded.type == "trade_intent_ack":
            key = (payload["trade_id"], payload["event_id"])
            assert key in events, f"{step.where}: ack for an unknown intent or event"
            assert payload["trace_id"] == events[key]["trace_id"]
            acked.add(key)
    assert acked == set(events), f"{path.name}: every intent and event gets an ack"


def test_the_transcripts_cover_every_message_type_and_error_code() -> None:
    types: set[str] = set()
    codes: set[str] = set()
    for path in PATHS:
        for step in load_transcript(path):
            if step.type is not None:
                types.add(step.type)
            if step.expect_error is not None:
                codes.add(step.expect_error)
    assert types == set(PAYLOADS)
    # a line longer than 1 MiB does not belong in a transcript; test_codec covers it. A refused handshake
    # closes its connection and needs a second terminal or a token: tests/e2e/test_account_ownership.py
    assert codes == {c.value for c in ProtocolError} - {
        ProtocolError.ERR_PROTOCOL_LINE_TOO_LONG.value,
        ProtocolError.ERR_PROTOCOL_ACCOUNT_IN_USE.value,
        ProtocolError.ERR_PROTOCOL_UNAUTHORIZED.value,
    }


def test_slave_session_stamps_the_comment_and_follows_the_new_ticket() -> None:
    steps = load_transcript(next(p for p in PATHS if p.name == "slave_session.jsonl"))
    lines = [s for s in steps if s.kind == "line"]
    assert lines[0].type == "handshake"
    assert {sym["broker_symbol"] for sym in lines[0].payload["symbols"]} >= {"XAUUSD.m", "GER30.x"}
    for s in lines:
        if s.type == "execute_order":
            assert 0 < len(s.payload["comment"]) <= 31
    partial = [s for s in lines if s.type == "close_result" and s.payload["remaining_lots"] > 0]
    assert partial and partial[0].payload["new_ticket"] is not None
    new_ticket = partial[0].payload["new_ticket"]
    assert any(s.type == "close_order" and s.payload["ticket"] == new_ticket for s in lines)


# ------------------------------------------------------------------------------------ the loader itself


def _write(tmp_path: Path, *objs: object) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


HEARTBEAT = {"type": "heartbeat", "timestamp_ms": 1, "payload": {"seq": 1}}


@pytest.mark.parametrize(
    "objs",
    [
        [{"from": "core", "line": HEARTBEAT}],
        [{"from": "ea"}],
        [{"from": "ea", "line": HEARTBEAT, "raw": "x"}],
        [{"from": "agent", "raw": "x"}],
        [{"from": "ea", "expect_error": "ERR_PROTOCOL_MALFORMED_JSON"}],
        [{"from": "ea", "raw": "x"}, {"from": "agent", "expect_error": "ERR_NOT_A_CODE"}],
        [{"from": "ea", "raw": "a\nb"}],
        [{"from": "ea", "raw_b64": "***"}],
        [{"from": "ea", "line": {"payload": {}}}],
        [{"from": "ea", "line": HEARTBEAT, "colour": "red"}],
        [{"from": "agent", "line": HEARTBEAT}, {"from": "agent", "expect_error": "ERR_PROTOCOL_WRONG_TYPE"}],
        [],
    ],
)
def test_loader_rejects_malformed_transcripts(tmp_path: Path, objs: list[object]) -> None:
    with pytest.raises(TranscriptError):
        load_transcript(_write(tmp_path, *objs))


def test_loader_reads_raw_bytes_and_the_wire_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"from": "ea", "raw_b64": "/w==", "note": "one byte"},
        {"from": "agent", "expect_error": "ERR_PROTOCOL_MALFORMED_JSON", "ref_type": "x"},
        {"from": "ea", "raw": "é"},
        {"from": "ea", "line": HEARTBEAT},
    )
    first, error, text, line = load_transcript(path)
    assert first.raw == b"\xff" and first.wire() == b"\xff\n" and first.note == "one byte"
    assert error.kind == "expect_error" and error.ref_type == "x"
    assert text.raw == "é".encode()
    assert line.kind == "line" and line.type == "heartbeat"
    assert json.loads(line.wire()) == HEARTBEAT and line.wire().count(b"\n") == 1
    with pytest.raises(TypeError):
        error.wire()


def test_mismatches_ignores_run_time_values_only() -> None:
    expected = {
        "type": "symbol_registration_result",
        "timestamp_ms": 1,
        "payload": {
            "account_id": "1",
            "agent_id": "a",
            "status": "ACCEPTED",
            "symbols": [{"canonical_symbol": "XAUUSD", "status": "ACCEPTED", "spec_age_ms": 0}],
        },
    }
    actual = json.loads(json.dumps(expected))
    actual["timestamp_ms"] = 99
    actual["payload"]["agent_id"] = "b"
    actual["payload"]["symbols"][0]["spec_age_ms"] = 1234
    actual["payload"]["new_field"] = True
    assert mismatches(expected, actual) == []
    actual["payload"]["symbols"][0]["status"] = "REJECTED"
    assert mismatches(expected, actual) == ["symbols[].status: expected 'ACCEPTED', got 'REJECTED'"]
    assert mismatches(expected, {**actual, "type": "heartbeat"}) != []
    del actual["payload"]["account_id"]
    assert "account_id: missing" in mismatches(expected, actual)
    assert mismatches({"type": "x", "payload": {"f": 1}}, {"type": "x", "payload": {"f": True}}) != []


# ------------------------------------------------------------------------------- PROTOCOL.md examples


def _json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)


def test_every_example_in_the_specification_is_valid() -> None:
    spec = (CONFORMANCE_DIR / "PROTOCOL.md").read_text(encoding="utf-8")
    blocks = _json_blocks(spec)
    types = set()
    for block in blocks:
        for chunk in _objects(block):
            if "from" in chunk:
                continue  # a transcript step, shown for the format only
            event = decode_line(json.dumps(chunk).encode(), frozenset(PAYLOADS))
            assert isinstance(event, Decoded), f"PROTOCOL.md example does not decode: {event}"
            types.add(event.type)
    assert types == set(PAYLOADS), f"types without an example: {set(PAYLOADS) - types}"


def _objects(block: str) -> list[dict[str, Any]]:
    """A block holds one pretty-printed object, or one compact object per line."""
    try:
        return [json.loads(block)]
    except ValueError:
        return [json.loads(line) for line in block.splitlines() if line.strip()]
