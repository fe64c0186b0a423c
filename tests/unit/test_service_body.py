"""What the Windows service runs, on any OS: ``serve`` copies until its ``Stopper`` is told to stop from
another thread (as the Service Control Manager's handler thread does), then returns with the store closed
and the socket released; a stop asked for before the run started ends it at once; the rotated log file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import trio

from echo.app.logfile import RotatingLogFile
from echo.app.winservice import Stopper, command_line, run


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "echo.toml"
    path.write_text(
        f'[agent]\nsocket_path = "{tmp_path / "echo.sock"}"\n'
        f'[store]\nurl = "sqlite:///{tmp_path / "echo.db"}"\n'
    )
    return path


@pytest.mark.parametrize("role", ["all"])
def test_a_stop_from_another_thread_closes_everything(tmp_path: Path, role: str) -> None:
    stopper, running = Stopper(), threading.Event()
    log = tmp_path / "service.log"
    failed: list[BaseException] = []

    def body() -> None:
        try:
            run(str(_config(tmp_path)), role, str(log), stopper, running.set)
        except BaseException as exc:  # reported below
            failed.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    assert running.wait(30), log.read_text() if log.exists() else "no log"
    assert (tmp_path / "echo.sock").exists()
    stopper.stop()
    thread.join(30)
    assert not thread.is_alive() and not failed, failed
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events.index("service_running") < events.index("service_stopped")
    assert not (tmp_path / "echo.sock").exists()  # released
    from echo.adapters.store.sqlite import SqliteStore

    async def reopen() -> None:  # the store was closed: it opens exclusively again
        store = SqliteStore.open(tmp_path / "echo.db", create=False, exclusive=True)
        await store.aclose()

    trio.run(reopen)


def test_a_stop_before_the_run_starts_ends_it_at_once(tmp_path: Path) -> None:
    stopper = Stopper()
    stopper.stop()
    started: list[bool] = []
    run(str(_config(tmp_path)), "all", str(tmp_path / "service.log"), stopper, lambda: started.append(True))
    assert started == []
    assert "service_stopped" in (tmp_path / "service.log").read_text()


def test_the_log_file_rotates_and_keeps_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "echo.log"
    with RotatingLogFile(path, max_bytes=100, backups=2) as out:
        for i in range(30):
            out.write(f"line {i:02d} " + "x" * 20 + "\n")  # 29 bytes a line: 3 a file
    files = [path, path.with_name("echo.log.1"), path.with_name("echo.log.2")]
    assert [f.exists() for f in files] == [True, True, True]
    assert not path.with_name("echo.log.3").exists()
    kept = [line for f in reversed(files) for line in f.read_text().splitlines()]
    assert [int(line.split()[1]) for line in kept] == list(range(21, 30))
    assert all(f.stat().st_size <= 100 for f in files)


def test_the_command_line_names_this_interpreter_and_the_settings() -> None:
    import shlex
    import sys

    words = shlex.split(command_line("/etc/echo.toml", "agent", "EchoAgent", "/var/log/echo.log"))
    assert words[:3] == [sys.executable, "-m", "echo.app.winservice"] or "-c" in words
    assert words[-8:] == [
        "--name",
        "EchoAgent",
        "--role",
        "agent",
        "--config",
        "/etc/echo.toml",
        "--log",
        "/var/log/echo.log",
    ]


def test_the_installer_is_added_to_the_pipe_users_on_the_command_line_and_in_the_config() -> None:
    import shlex

    from echo.app.winservice import parse_args, with_pipe_users
    from echo.domain.config import AgentConfig, Config

    words = shlex.split(command_line("C:/echo.toml", "all", "Echo", "C:/echo.log", "S-1-5-21-1-2-3-1001"))
    assert words[-2:] == ["--pipe-users", "S-1-5-21-1-2-3-1001"]
    assert parse_args(words[words.index("--name") :]).pipe_users == "S-1-5-21-1-2-3-1001"
    config = Config(agent=AgentConfig(pipe_users="PC\\trader, "))
    assert with_pipe_users(config, "S-1-5-21-1-2-3-1001").agent.pipe_user_list() == [
        "PC\\trader",
        "S-1-5-21-1-2-3-1001",
    ]
    assert with_pipe_users(config, "").agent.pipe_user_list() == ["PC\\trader"]
