"""EA-side conformance of the MQL5 slave: every slave session transcript, run by the runner the MQL4 EAs
and the Python terminals are held to (``tests/conformance_ea.py``, playing the Agent on TCP, the only way an
MT5 EA reaches it). The broker is set up as the session describes, as for the MQL4 slave. Where MT5 differs,
the runner's rules absorb it without a special case: a partial close keeps the position's ticket, so the
``new_ticket`` the EA reports is that ticket, learned like any minted id and named by the later commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conformance_ea import play_agent
from tests.conformance_support import load_transcript
from tests.mql4.test_conformance_eas import SLAVE_SESSIONS, agent_end, start_compiled

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", SLAVE_SESSIONS, ids=lambda p: p.name)
async def test_slave_sessions_against_the_mql5_slave(path: Path, slave5_exe: Path, tmp_path: Path) -> None:
    steps = load_transcript(path)
    listener, sock, inputs = await agent_end(tmp_path, "compiled-tcp")
    with trio.fail_after(30):
        proc = await start_compiled(slave5_exe, tmp_path, sock, steps, inputs)
        conn, _ = await listener.accept()
        stream = trio.SocketStream(conn)
        try:
            problems = await play_agent(steps, stream)
        finally:
            await stream.aclose()
            proc.terminate()
            await proc.wait()
    listener.close()
    assert problems == []
    # the partial close kept the ticket: the close of the rest named the position the open made
    results = (tmp_path / "files" / "echo_slave_results.jsonl").read_text(encoding="utf-8").splitlines()
    tickets = [line.split('"ticket":')[1].split(",")[0] for line in results if '"close_result"' in line]
    assert len(tickets) == 2 and tickets[0] == tickets[1]
