"""A person's mistake gets one line naming the thing and a non-zero exit, never a traceback: the CLI run
as a user runs it (``python -m echo ...``) in a temporary folder."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio

from echo.adapters.store.postgres import split_url
from echo.adapters.store.sqlite import SqliteStore
from tests.backends import POSTGRES_URL, _postgres_problem, free_port, postgres_schema, unavailable

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "echo"]


def echo(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line(done: subprocess.CompletedProcess[str], *names: str, code: int | None = None) -> str:
    """A non-zero exit (``code`` if given), no traceback, and stderr one line naming every one of
    ``names``."""
    assert done.returncode != 0, (done.stdout, done.stderr)
    if code is not None:
        assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def config(tmp_path: Path, extra: str = "", *, store: str = "memory://") -> Path:
    """A config whose socket, store, ledger and log are all in ``tmp_path``."""
    path = tmp_path / "echo.toml"
    path.write_text(
        f'[agent]\nsocket_path = "{tmp_path / "echo.sock"}"\n[store]\nurl = "{store}"\n'
        f'[log]\nfile = "{tmp_path / "echo.log"}"\n{extra}'
    )
    return path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_metrics_port_in_use(tmp_path: Path, taken_port: int) -> None:
    conf = config(tmp_path, f'[metrics]\nlisten = "127.0.0.1:{taken_port}"\n')
    one_line(echo("run", "--config", str(conf), cwd=tmp_path), f"metrics.listen 127.0.0.1:{taken_port}")


def test_grpc_port_in_use(tmp_path: Path, taken_port: int) -> None:
    conf = config(tmp_path)
    done = echo(
        "run", "--role", "core", "--config", str(conf), "--listen", f"127.0.0.1:{taken_port}", cwd=tmp_path
    )
    one_line(done, f"split.listen 127.0.0.1:{taken_port}", "in use")


def test_postgresql_refusing(tmp_path: Path) -> None:
    port = free_port()
    conf = config(tmp_path, store=f"postgresql://postgres@127.0.0.1:{port}/echo")
    one_line(echo("run", "--config", str(conf), cwd=tmp_path), "127.0.0.1", str(port), "refused")


def test_a_store_whose_folder_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    conf = config(tmp_path, store=f"sqlite:///{missing / 'echo.db'}")
    one_line(echo("run", "--config", str(conf), cwd=tmp_path), str(missing), "does not exist")
    assert not missing.exists(), "no folder is created for a path with a typo"


def test_a_store_that_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()
    conf = config(tmp_path, store=f"sqlite:///{tmp_path / 'adir.db'}")
    one_line(echo("run", "--config", str(conf), cwd=tmp_path), f"{tmp_path / 'adir.db'}")


def test_a_socket_whose_folder_does_not_exist_or_that_cannot_be_served(tmp_path: Path) -> None:
    conf = config(tmp_path)
    missing = tmp_path / "nope" / "echo.sock"
    done = echo("run", "--config", str(conf), "--socket", str(missing), cwd=tmp_path)
    one_line(done, str(missing), "does not exist")
    plain = tmp_path / "a-file"
    plain.write_text("not a socket")
    one_line(echo("run", "--config", str(conf), "--socket", str(plain), cwd=tmp_path), str(plain))
    assert plain.read_text() == "not a socket"


def test_version(tmp_path: Path) -> None:
    from echo import __version__

    done = echo("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"echo-copier {__version__}"


@pytest.mark.postgres
def test_migrate_creates_its_database(tmp_path: Path) -> None:
    problem = _postgres_problem()
    if problem is not None:
        unavailable("postgres", problem)
    conninfo, _ = split_url(POSTGRES_URL)
    name = f"echo_t_{secrets.token_hex(5)}"
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        done = echo("migrate", "--store", url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "migrated schema echo" in done.stdout
        again = echo("migrate", "--store", url, cwd=tmp_path)
        assert again.returncode == 0 and "already up to date" in again.stdout
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_read_only_commands_never_create_a_store_and_say_which_they_read(tmp_path: Path) -> None:
    for args in (["explain", "01a211cf-4e14-7b8d-bcd4-96b5a82e8751"], ["show"]):
        one_line(echo(*args, cwd=tmp_path), "var/echo.db", code=1)
        assert not (tmp_path / "var").exists(), "no store (nor folder) was created"
        other = tmp_path / "other.db"
        one_line(echo(*args, "--store", f"sqlite:///{other}", cwd=tmp_path), str(other), code=1)
        assert not other.exists()
    db = tmp_path / "real.db"
    trio.run(SqliteStore.open(db).aclose)
    done = echo("show", "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert done.returncode == 0 and f"store: sqlite:///{db}" in done.stderr


@pytest.mark.postgres
def test_read_only_commands_never_create_a_postgres_schema(tmp_path: Path) -> None:
    with postgres_schema() as url:  # a schema name nobody created
        schema = url.rsplit("schema=", 1)[1]
        one_line(echo("show", "--store", url, cwd=tmp_path), f"schema {schema}", code=1)
        conninfo, _ = split_url(url)
        with psycopg.connect(conninfo) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert found is None


def test_core_listening_beyond_this_machine_needs_a_token_and_tls(tmp_path: Path) -> None:
    port = free_port()
    conf = config(tmp_path)
    done = echo("run", "--role", "core", "--config", str(conf), "--listen", f"0.0.0.0:{port}", cwd=tmp_path)
    one_line(done, f"split.listen 0.0.0.0:{port}", "split.token", "split.allow_insecure", code=2)
    conf = config(tmp_path, "[split]\ntoken = 's3cret'\n")
    done = echo("run", "--role", "core", "--config", str(conf), "--listen", f"0.0.0.0:{port}", cwd=tmp_path)
    one_line(done, "split.tls_cert", code=2)


async def test_allow_insecure_serves_anyway(tmp_path: Path) -> None:
    port = free_port()
    conf = config(tmp_path, "[split]\nallow_insecure = true\n")
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "core", "--config", str(conf), "--listen", f"0.0.0.0:{port}"],
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        try:
            assert proc.stderr is not None
            seen = b""
            while b"copying" not in seen:
                chunk = await proc.stderr.receive_some()
                assert chunk, seen
                seen += chunk
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--masters", "0"], "--masters"),
        (["--slaves", "0"], "--slaves"),
        (["--trades", "-1"], "--trades"),
        (["--trades", "0"], "--trades"),
        (["--pace", "-1"], "--pace"),
        (["--masters", "x"], "--masters"),
    ],
)
def test_demo_arguments_are_validated(tmp_path: Path, args: list[str], name: str) -> None:
    done = echo("demo", *args, "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"argument {name}:" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "demo").exists()


def test_sim_ea_on_a_missing_socket(tmp_path: Path) -> None:
    sock = tmp_path / "nobody.sock"
    done = echo(
        "sim-ea", "--role", "slave", "--account", "51001", "--socket", str(sock), cwd=tmp_path, timeout=20
    )
    one_line(done, str(sock), code=1)


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    import argparse

    from echo.cli import build_parser

    missing: list[str] = []
    parsers = [("echo-copier", build_parser())]
    while parsers:
        name, parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend((f"{name} {n}", p) for n, p in action.choices.items())
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"


@pytest.mark.skipif(sys.platform == "win32", reason="the service commands work there")
@pytest.mark.parametrize("what", ["install --config echo.toml", "start", "status --name EchoAgent"])
def test_service_outside_windows_says_where_to_go(tmp_path: Path, what: str) -> None:
    line = one_line(echo("service", *what.split(), cwd=tmp_path), "systemd", code=2)
    assert line.startswith("echo-copier service: Windows services exist only on Windows;"), line


def test_service_install_refuses_a_role_it_cannot_run(tmp_path: Path) -> None:
    done = echo("service", "install", "--config", "echo.toml", "--role", "core", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --role: invalid choice: 'core'" in done.stderr.strip().splitlines()[-1]


def test_run_pipe_names_a_pipe_the_config_would_accept(tmp_path: Path) -> None:
    conf = config(tmp_path)
    done = echo("run", "--config", str(conf), "--pipe", "a\\b", cwd=tmp_path)
    one_line(done, "configuration error: agent.pipe_name must be", "'a\\\\b'", code=2)
