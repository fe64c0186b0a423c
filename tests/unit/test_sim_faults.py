"""The simulator's fault injection (``echo.sim.faults``) and how simulated accounts are numbered
(``echo.sim.accounts``)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from echo.sim.accounts import master_ids, slave_ids, trades_per_master
from echo.sim.faults import FaultCounts, Faults, FaultSpecError, FaultyStream


@given(st.text(max_size=80))
def test_any_faults_text_parses_or_is_refused_with_a_fault_spec_error(text: str) -> None:
    try:
        faults = Faults.parse(text)
    except FaultSpecError:
        return
    assert all(0.0 <= p < 1.0 for p in (faults.drop, faults.dup, faults.reorder, faults.disconnect))
    assert faults.crash >= 0


probability = st.floats(0.0, 0.9999).map(lambda p: round(p, 4))


@given(probability, probability, probability, probability, st.integers(0, 10_000))
def test_faults_read_back_what_they_print(
    drop: float, dup: float, reorder: float, disconnect: float, crash: int
) -> None:
    faults = Faults(drop, dup, reorder, disconnect, crash)
    assert Faults.parse(str(faults)) == faults
    assert faults.on_lines == any(p > 0 for p in (drop, dup, reorder, disconnect))


def test_a_faulty_stream_drops_and_duplicates_lines_but_never_the_handshake() -> None:
    async def main() -> tuple[bytes, FaultCounts]:
        near, far = trio.testing.memory_stream_pair()
        counts = FaultCounts()
        faulty = FaultyStream(near, random.Random(3), Faults(drop=0.3, dup=0.3), counts)
        await faulty.send_all(b'{"type":"handshake","payload":{"account_id":"51001"}}\n')
        for n in range(200):
            await faulty.send_all(b'{"type":"heartbeat","payload":{"seq":%d}}\n' % n)
        await faulty.aclose()
        got = b""
        while chunk := await far.receive_some():
            got += chunk
        return got, counts

    got, counts = trio.run(main)
    lines = got.splitlines()
    assert lines[0].startswith(b'{"type":"handshake"')
    assert counts.dropped > 0 and counts.duplicated > 0
    assert len(lines) == 1 + 200 - counts.dropped + counts.duplicated
    assert counts.as_dict()["crashes"] == {"copier": 0, "slave": 0, "master": 0}


@given(st.integers(0, 10_000), st.integers(1, 50))
def test_trades_are_shared_among_the_masters_evenly(trades: int, masters: int) -> None:
    shares = trades_per_master(trades, masters)
    assert len(shares) == masters and sum(shares) == trades
    assert max(shares) - min(shares) <= 1 and shares == sorted(shares, reverse=True)


def test_accounts_are_numbered_from_9001_and_51001() -> None:
    assert master_ids(2) == ["9001", "9002"]
    assert slave_ids(3) == ["51001", "51002", "51003"]


@pytest.mark.parametrize("spec", ["drop=1", "crash=-1", "drop=0.1,drop=0.2", "jitter=0.1", "drop"])
def test_malformed_faults_name_the_part(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        Faults.parse(spec)
