"""Echo/Json.mqh (the EAs' JSON) executed through the harness and checked against Python's json module
and the Agent's own codec: lookups by path, escaping, the line builder, and garbage that must not crash."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.backends import once_per_run
from tests.mql4.harness_support import HARNESS, ask, build

SELFTEST = HARNESS / "selftest"
ASCII = "".join(chr(c) for c in range(32, 127)) + "\t"
"""Values the lookups return one per output line (escaping of line breaks has its own test)."""


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield once_per_run(tmp_path_factory, "json", lambda d: build(SELFTEST / "JsonSelfTest.mq4", d))


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return "".join(rng.choice(ASCII) for _ in range(rng.randrange(12)))
    if kind == 1:
        return rng.randint(-(2**53), 2**53)
    if kind == 2:
        return round(rng.uniform(-1e6, 1e6), rng.randrange(8))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.choice(["", "x", 'a"b', "c\\d"])
    if kind in (5, 6):
        return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(5))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def _paths(value: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{prefix}.{k}" if prefix else k
            yield p, v
            yield from _paths(v, p)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            p = f"{prefix}[{i}]"
            yield p, v
            yield from _paths(v, p)


def test_lookups_by_path_agree_with_python(exe: Path) -> None:
    rng = random.Random(7)
    requests: list[str] = []
    expected: list[str] = []
    for _ in range(400):
        doc = {"type": "x", "payload": _random_value(rng, 0)}
        line = json.dumps(doc, separators=rng.choice([(",", ":"), (", ", ": ")]))
        for path, value in _paths(doc):
            if isinstance(value, str):
                requests.append(f"str\t{path}\t{line}")
                expected.append(value)
            elif isinstance(value, list):
                requests.append(f"len\t{path}\t{line}")
                expected.append(str(len(value)))
            elif isinstance(value, bool) or value is None:
                requests.append(f"raw\t{path}\t{line}")
                expected.append(json.dumps(value))
            elif isinstance(value, int | float):
                requests.append(f"num\t{path}\t{line}")
                expected.append(f"{float(value):.6f}")
        requests.append(f"kind\tpayload.no_such_key\t{line}")
        expected.append("0")
    answers = ask(exe, [r.replace("\\n", "\\n") for r in requests])
    got = [a.replace("\n", "\\n") for a in answers]
    mismatches = [
        (r[:120], e, g) for r, e, g in zip(requests, expected, got, strict=True) if e != g and "\n" not in e
    ]
    assert not mismatches, mismatches[:5]
    assert len(requests) > 1000


@settings(max_examples=25, deadline=None)
@given(
    st.text(
        alphabet=st.characters(min_codepoint=1, max_codepoint=127, blacklist_characters="\n\r"), max_size=40
    )
)
def test_escape_round_trips_through_json(exe: Path, text: str) -> None:
    (escaped,) = ask(exe, [f"esc\t{text.encode().hex()}"])
    assert json.loads(f'"{escaped}"') == text


def test_the_line_builder_makes_a_protocol_line(exe: Path) -> None:
    (line,) = ask(exe, ["line\t019aba5a-1ff8-7d3b-a4ea-07b39d1963fe"])
    assert json.loads(line) == {
        "type": "trade_intent_ack",
        "timestamp_ms": 1764063000006,
        "payload": {
            "trade_id": "019aba5a-1ff8-7d3b-a4ea-07b39d1963fe",
            "status": "OK",
            "event_id": None,
            "price": 2398.45,
            "attempt": 3,
            "ok": True,
        },
    }


def test_every_agent_line_of_the_transcripts_reads_the_same(exe: Path) -> None:
    """What the EAs will read: each Agent line of conformance/*.jsonl, every scalar field by its path."""
    root = Path(__file__).resolve().parents[2] / "conformance"
    requests, expected = [], []
    for path in sorted(root.glob("*.jsonl")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            step = json.loads(raw)
            if step.get("from") != "agent" or "line" not in step:
                continue
            line = json.dumps(step["line"])
            for p, v in _paths(step["line"]):
                if isinstance(v, str):
                    requests.append(f"str\t{p}\t{line}")
                    expected.append(v)
    assert len(requests) > 50
    assert ask(exe, requests) == expected


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(min_codepoint=1, max_codepoint=127, blacklist_characters="\n\r\t"),
            max_size=60,
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["str", "raw", "len", "kind", "num"]),
    st.sampled_from(["payload", "payload.a[0].b", "a.b.c", "[3]", "payload.x[", ""]),
)
def test_garbage_never_crashes_the_reader(exe: Path, garbage: list[str], command: str, path: str) -> None:
    answers = ask(exe, [f"{command}\t{path}\t{g}" for g in garbage])
    assert len(answers) == len(garbage)
