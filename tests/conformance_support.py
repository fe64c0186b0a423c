"""Reading the EA protocol conformance transcripts (``conformance/*.jsonl``).

A transcript is one session between one EA and the Agent, one JSON object per line (the format is specified
in ``conformance/PROTOCOL.md``, section "Conformance"):

- ``{"from": "ea" | "agent", "line": {...}}``: a valid protocol line sent by that side;
- ``{"from": "ea", "raw": "..."}`` or ``{"from": "ea", "raw_b64": "..."}``: the exact bytes of one line the EA
  sends (without the ``\\n`` that ends it), possibly garbage; ``raw_b64`` carries bytes that are not UTF-8;
- ``{"from": "agent", "expect_error": "ERR_PROTOCOL_...", "ref_type": "..."}``: the ``error`` line the Agent
  must send next (``ref_type`` optional);
- an optional ``"note"`` on any step.

``load_transcript`` validates the format and returns ``Step`` objects; ``mismatches`` compares an expected
Agent line with the line the Agent really sent, leaving out the values that only exist at run time
(``VOLATILE``). Both serve the static tests and the end-to-end replay against a running Agent.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from echo.domain.errors import ProtocolError

CONFORMANCE_DIR = Path(__file__).resolve().parent.parent / "conformance"

SESSION_RULE_CODES = frozenset(
    {ProtocolError.ERR_PROTOCOL_NOT_HANDSHAKEN.value, ProtocolError.ERR_PROTOCOL_VERSION_UNSUPPORTED.value}
)
"""Errors the Agent sends for lines that decode fine but break a session rule (not codec failures)."""

VOLATILE: dict[str, frozenset[str]] = {
    "symbol_registration_result": frozenset(
        {
            "agent_id",
            "core_version",
            "evaluated_at_ms",
            "evaluation_id",
            "symbols[].spec_age_ms",
            "symbols[].evaluated_at_ms",
        }
    ),
    "delivery_config": frozenset(
        {"ack_timeout_ms", "retry_backoff_ms", "max_retries", "heartbeat_interval_ms"}
    ),
    "trade_intent_ack": frozenset({"message"}),
    "error": frozenset({"message"}),
    "heartbeat": frozenset({"seq"}),
}
"""Payload paths (``[]`` = every element of a list) whose values come from the run (clock, configuration,
generated ids, free text), so a replay does not compare them. The envelope ``timestamp_ms`` is never
compared."""

_KEYS = frozenset({"from", "note", "line", "raw", "raw_b64", "expect_error", "ref_type"})
_BODIES = ("line", "raw", "raw_b64", "expect_error")
_CODES = frozenset(code.value for code in ProtocolError)


class TranscriptError(ValueError):
    """A transcript file breaks the transcript format; the message names file and line."""


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a transcript."""

    path: Path
    lineno: int
    sender: Literal["ea", "agent"]
    line: dict[str, Any] | None = None
    """The protocol object (envelope with type, timestamp_ms, payload) of a valid line."""
    raw: bytes | None = None
    """The exact bytes of a line sent as-is (``raw`` as UTF-8 or ``raw_b64`` decoded), without its newline."""
    expect_error: str | None = None
    """The ``ERR_PROTOCOL_*`` code of the ``error`` line the Agent must send next."""
    ref_type: str | None = None
    """With ``expect_error``: the ``ref_type`` that error must carry."""
    note: str = ""

    @property
    def kind(self) -> Literal["line", "raw", "expect_error"]:
        if self.line is not None:
            return "line"
        if self.raw is not None:
            return "raw"
        return "expect_error"

    @property
    def type(self) -> str | None:
        """The message type of a ``line`` step."""
        return None if self.line is None else self.line.get("type")

    @property
    def payload(self) -> dict[str, Any]:
        if self.line is None:
            raise TypeError(f"{self.where}: a {self.kind} step has no payload")
        payload: dict[str, Any] = self.line["payload"]
        return payload

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.lineno}"

    def wire(self) -> bytes:
        """The bytes the sender writes for this step, newline included (``line`` and ``raw`` steps)."""
        if self.raw is not None:
            return self.raw + b"\n"
        if self.line is not None:
            return json.dumps(self.line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        raise TypeError(f"{self.where}: an expect_error step is not sent, it is awaited")


def transcript_paths(directory: Path = CONFORMANCE_DIR) -> list[Path]:
    """Every transcript, sorted by name."""
    return sorted(directory.glob("*.jsonl"))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _step(path: Path, lineno: int, obj: Any) -> Step:
    where = f"{path.name}:{lineno}"
    if not isinstance(obj, dict):
        raise TranscriptError(f"{where}: a step is a JSON object")
    unknown = set(obj) - _KEYS
    if unknown:
        raise TranscriptError(f"{where}: unknown keys {sorted(unknown)}")
    sender = obj.get("from")
    if sender not in ("ea", "agent"):
        raise TranscriptError(f"{where}: 'from' must be 'ea' or 'agent', got {sender!r}")
    bodies = [k for k in _BODIES if k in obj]
    if len(bodies) != 1:
        raise TranscriptError(f"{where}: a step has exactly one of {list(_BODIES)}, got {bodies}")
    body = bodies[0]
    note = obj.get("note", "")
    if not isinstance(note, str):
        raise TranscriptError(f"{where}: 'note' must be a string")
    if "ref_type" in obj and body != "expect_error":
        raise TranscriptError(f"{where}: 'ref_type' goes with 'expect_error' only")
    if body == "line":
        line = obj["line"]
        if not isinstance(line, dict) or not isinstance(line.get("type"), str) or "payload" not in line:
            raise TranscriptError(f"{where}: 'line' must be a protocol object with type and payload")
        return Step(path, lineno, sender, line=line, note=note)
    if body == "expect_error":
        if sender != "agent":
            raise TranscriptError(f"{where}: only the agent sends errors in a transcript")
        code, ref_type = obj["expect_error"], obj.get("ref_type")
        if code not in _CODES:
            raise TranscriptError(f"{where}: {code!r} is not an ERR_PROTOCOL_* code")
        if ref_type is not None and not isinstance(ref_type, str):
            raise TranscriptError(f"{where}: 'ref_type' must be a string")
        return Step(path, lineno, sender, expect_error=code, ref_type=ref_type, note=note)
    if sender != "ea":
        raise TranscriptError(f"{where}: raw lines are sent by the ea only")
    if body == "raw":
        if not isinstance(obj["raw"], str):
            raise TranscriptError(f"{where}: 'raw' must be a string")
        raw = obj["raw"].encode("utf-8")
    else:
        try:
            raw = base64.b64decode(obj["raw_b64"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise TranscriptError(f"{where}: 'raw_b64' is not base64: {exc}") from exc
    if b"\n" in raw:
        raise TranscriptError(f"{where}: a raw line must not contain a newline")
    return Step(path, lineno, sender, raw=raw, note=note)


def load_transcript(path: Path | str) -> list[Step]:
    """Parse and check one transcript file. Raises ``TranscriptError`` naming the file and line."""
    path = Path(path)
    steps: list[Step] = []
    with path.open(encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                raise TranscriptError(f'{path.name}:{lineno}: blank line (send a blank line with "raw": "")')
            try:
                obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            except ValueError as exc:
                raise TranscriptError(f"{path.name}:{lineno}: not a JSON object: {exc}") from exc
            step = _step(path, lineno, obj)
            if step.kind == "expect_error" and (not steps or steps[-1].sender != "ea"):
                raise TranscriptError(f"{step.where}: expect_error must follow a line sent by the ea")
            steps.append(step)
    if not steps:
        raise TranscriptError(f"{path.name}: empty transcript")
    return steps


def mismatches(
    expected: dict[str, Any], actual: dict[str, Any], volatile: dict[str, frozenset[str]] | None = None
) -> list[str]:
    """Differences between an expected protocol object and the one received, ``[]`` when they match.

    ``type`` must be equal; ``timestamp_ms`` and the ``VOLATILE`` payload paths of that type are not
    compared; keys the receiver got beyond the expected ones are ignored (forward compatibility).
    """
    if expected.get("type") != actual.get("type"):
        return [f"type: expected {expected.get('type')!r}, got {actual.get('type')!r}"]
    skip = (VOLATILE if volatile is None else volatile).get(str(expected.get("type")), frozenset())
    out: list[str] = []
    _compare(expected.get("payload"), actual.get("payload"), "", skip, out)
    return out


def _compare(exp: Any, act: Any, path: str, skip: frozenset[str], out: list[str]) -> None:
    if path in skip:
        return
    if isinstance(exp, dict):
        if not isinstance(act, dict):
            out.append(f"{path or '$'}: expected an object, got {act!r}")
            return
        for key, value in exp.items():
            sub = f"{path}.{key}" if path else key
            if key not in act:
                if sub not in skip:
                    out.append(f"{sub}: missing")
                continue
            _compare(value, act[key], sub, skip, out)
        return
    if isinstance(exp, list):
        if not isinstance(act, list) or len(act) != len(exp):
            out.append(f"{path}: expected {exp!r}, got {act!r}")
            return
        for e, a in zip(exp, act, strict=True):
            _compare(e, a, f"{path}[]", skip, out)
        return
    if exp != act or isinstance(exp, bool) != isinstance(act, bool):
        out.append(f"{path}: expected {exp!r}, got {act!r}")
