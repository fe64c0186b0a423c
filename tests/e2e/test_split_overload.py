"""A burst far past capacity through split mode: Core (``run --role core``) and one Agent (``run --role
agent``) are processes of their own joined by gRPC, bounded small on purpose (``router.max_in_flight``,
``router.max_behind_ms`` and the terminals' outboxes), and simulated terminals drive the Agent from this
process over its Unix socket. Not timed: it checks that every open and every close arrives afterwards
exactly once on each slave and in the store, that no terminal was cut off and that the gRPC link never
dropped (what Core queued for the Agent and the answers it had not read yet were waited for, not
re-sent into a collapse). The burst is ``test_overload``'s (3 masters x 24 opens at once to 4 slaves);
Core admits 40 unanswered commands and 50 ms of backlog, and the terminals queue 16 lines: Core answers a
master's 24 intents in one write to the Agent, more than the outbox holds, and the answers that find it
full wait in the connection instead of the master being cut off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from tests.backends import free_port
from tests.e2e.test_overload import _drain, burst_then_close, each_once, log_events, terminals
from tests.e2e.world import CLI, read_until

pytestmark = pytest.mark.e2e


async def test_a_burst_far_past_capacity_in_split_mode_arrives_exactly_once_over_one_grpc_link(
    tmp_path: Path,
) -> None:
    sock, db = tmp_path / "agent.sock", tmp_path / "echo.db"
    core_log, agent_log = tmp_path / "core.log", tmp_path / "agent.log"
    where = f"127.0.0.1:{free_port()}"
    core_conf, agent_conf = tmp_path / "core.toml", tmp_path / "agent.toml"
    core_conf.write_text(
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "NORMAL"\n'
        f'[split]\nlisten = "{where}"\n'
        "[router]\nmax_in_flight = 40\nmax_behind_ms = 50\n"
        "[delivery]\nretry_backoff_ms = 100\n"
        f'[log]\nformat = "json"\nlevel = "info"\nfile = "{core_log}"\n'
    )
    agent_conf.write_text(
        f'[agent]\nagent_id = "burst-agent"\nsocket_path = "{sock}"\noutbox_lines = 16\n'
        f'ledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
        f'[split]\ncore = "{where}"\n'
        f'[log]\nformat = "json"\nlevel = "info"\nfile = "{agent_log}"\n'
    )
    market, slaves, masters = terminals(sock, "5400", "940")
    processes: list[trio.Process] = []
    with trio.fail_after(120):
        try:
            core = await trio.lowlevel.open_process(
                [*CLI, "run", "--role", "core", "--config", str(core_conf)], stderr=subprocess.PIPE
            )
            processes.append(core)
            await read_until(core, b"copying")
            agent = await trio.lowlevel.open_process(
                [*CLI, "run", "--role", "agent", "--config", str(agent_conf)], stderr=subprocess.PIPE
            )
            processes.append(agent)
            await read_until(agent, b"serving terminals")
            async with trio.open_nursery() as nursery:
                for proc in processes:
                    nursery.start_soon(_drain, proc)
                opened = await burst_then_close(nursery, market, slaves, masters)
                # read before the processes stop (stopping ends the link, which is logged)
                core_events, agent_events = log_events(core_log), log_events(agent_log)
                nursery.cancel_scope.cancel()
        finally:
            for proc in reversed(processes):
                proc.terminate()
                await proc.wait()

    turned_away = sum(n for event, n in core_events.items() if event.startswith("busy_"))
    assert turned_away > 0, "the burst was admitted whole; it proves nothing"
    assert agent_events["agent_ea_too_slow"] == agent_events["agent_ea_stalled"] == 0
    assert core_events["grpc_agent_connected"] == 1
    assert core_events["grpc_agent_disconnected"] == agent_events["grpc_link_down"] == 0
    await each_once(db, slaves, masters, opened)
