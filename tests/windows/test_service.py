"""``echo-copier service`` on Windows, with Wine's Service Control Manager (``services.exe``) in a Wine
prefix of this module's own: install (auto start), status, start, a master's trades copied onto a slave
through the service's named pipe, a clean stop (the store closed, the log says so), uninstall; and each
mistake (installed twice, not installed, a bad configuration) one line and a non-zero exit.

What Wine cannot show: Wine 8 accepts the failure actions (restart after 5 s, 30 s, 60 s) but does not
keep them (``QueryServiceConfig2`` returns none, so ``status`` says "on failure: nothing" here, and a
service process that dies is not restarted: services.exe does not notice it ended), and it lacks
``SERVICE_CONFIG_FAILURE_ACTIONS_FLAG``; everyone is an administrator there, so the refusal of an
unelevated install cannot be shown either."""

from __future__ import annotations

import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore
from tests.windows import prepare
from tests.windows.wine import WinePython, read_until, windows_path, wine_python

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class PrivatePrefix(WinePython):
    """The prepared Windows Python in a Wine prefix of its own: an auto-start service installed here never
    starts in the other Windows tests' prefix."""

    prefix: Path

    @property
    def env(self) -> dict[str, str]:
        return prepare.wine_env(self.prefix)


@pytest.fixture
def py(tmp_path: Path) -> Iterator[PrivatePrefix]:
    shared = wine_python()
    own = PrivatePrefix(shared.home, tmp_path / "prefix")
    quiet = subprocess.DEVNULL  # a pipe would stay open in the wineserver a command starts
    run = {"env": own.env, "stdin": quiet, "stdout": quiet, "stderr": quiet, "timeout": 120}
    subprocess.run(["wineboot", "-i"], check=True, **run)  # type: ignore[call-overload]
    subprocess.run(["wineserver", "-w"], check=True, **run)  # type: ignore[call-overload]
    # one Windows process alive for the whole test keeps the prefix booted once: one services.exe, and the
    # installed auto-start service is not started by a new boot between two commands
    keep = subprocess.Popen(
        own.argv("-c", "import time; time.sleep(3600)"), env=own.env, stdin=quiet, stdout=quiet, stderr=quiet
    )
    # and every process that boots it writes nowhere: what it starts would hold a test's pipes open
    subprocess.run(own.argv("-c", "pass"), check=True, **run)  # type: ignore[call-overload]
    try:
        yield own
    finally:
        keep.kill()
        keep.wait()
        subprocess.run(["wineserver", "-k"], check=False, **run)  # type: ignore[call-overload]


def echo(py: WinePython, *args: str) -> subprocess.CompletedProcess[str]:
    return py.run("-m", "echo", *args, timeout=150)


async def test_install_start_copy_stop_uninstall(py: PrivatePrefix, tmp_path: Path) -> None:
    name = f"EchoTest{secrets.token_hex(3)}"
    pipe = f"echo-svc-{secrets.token_hex(4)}"
    db = tmp_path / "echo.db"
    log = tmp_path / "service.log"
    config = tmp_path / "echo.toml"
    config.write_text(
        f"[agent]\npipe_name = {pipe!r}\n[store]\nurl = 'sqlite:///{windows_path(db)}'\n"
        f"[log]\nfile = {windows_path(log)!r}\n"
    )
    assert (done := echo(py, "service", "status", "--name", name)).returncode == 1
    assert done.stderr.splitlines() == [f"echo-copier service: the service {name} is not installed"]

    done = echo(py, "service", "install", "--config", windows_path(config), "--name", name)
    assert done.returncode == 0, done.stderr
    said, sid = done.stdout.strip().rsplit(" (", 1)
    assert said == (
        f"installed the service {name} (all); it starts at boot; log {windows_path(log)}; "
        "its pipe admits this user's terminals"
    )
    assert sid.startswith("S-1-5-") and sid.endswith(")"), sid
    sid = sid.removesuffix(")")
    done = echo(py, "service", "install", "--config", windows_path(config), "--name", name)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"echo-copier service: the service {name} is already installed (uninstall it first)"
    ]
    done = echo(py, "service", "status", "--name", name)
    assert done.returncode == 3, done.stderr  # installed, not running
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"service {name}: stopped", "start: automatic (at boot)"]
    assert f"-m echo.app.winservice --name {name} --role all --config {windows_path(config)}" in lines[3]
    assert lines[4] == f"log: {windows_path(log)}"
    assert (
        lines[5] == f"pipe users: {sid}"
    )  # the service runs as SYSTEM: the installer's terminals may connect

    done = echo(py, "service", "start", "--name", name)
    assert (done.returncode, done.stdout.strip()) == (0, f"the service {name} is running"), done.stderr
    assert "service_running" in log.read_text()
    done = echo(py, "service", "status", "--name", name)
    assert done.returncode == 0 and done.stdout.startswith(f"service {name}: running (pid "), done

    said = {k: bytearray() for k in ("slave", "master")}
    sim = ["-m", "echo", "sim-ea", "--pipe", pipe]
    with trio.fail_after(90):
        slave = await py.start(*sim, "--role", "slave", "--account", "51001")
        try:
            await read_until(slave, b"connected to the named pipe", said["slave"])
            master = await py.start(*sim, "--role", "master", "--account", "9001", "--trades", "2")
            await read_until(master, b"sim master 9001: 2 trades done", said["master"])
            assert await master.wait() == 0
        finally:
            slave.kill()
            await slave.wait()

    done = echo(py, "service", "uninstall", "--name", name)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"echo-copier service: the service {name} is running; stop it first"]
    done = echo(py, "service", "stop", "--name", name)
    assert (done.returncode, done.stdout.strip()) == (0, f"the service {name} is stopped"), done.stderr
    text = log.read_text()
    assert "service_stopped" in text and "service_failed" not in text, text
    assert "Traceback" not in text
    done = echo(py, "service", "stop", "--name", name)
    assert done.stderr.splitlines() == [f"echo-copier service: the service {name} is not running"]

    store = SqliteStore.open(db, create=False)  # closed by the service: every trade is in it
    try:
        trades = await store.trades()
        assert len(trades) == 2
        decisions = Counter((d.account_id, d.decision) for d in await store.decisions())
        assert decisions == {("51001", "copy"): 2}
    finally:
        await store.aclose()

    done = echo(py, "service", "uninstall", "--name", name)
    assert (done.returncode, done.stdout.strip()) == (0, f"the service {name} is uninstalled"), done.stderr
    assert echo(py, "service", "status", "--name", name).returncode == 1


def test_a_bad_configuration_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    py = wine_python()
    bad = tmp_path / "bad.toml"
    bad.write_text("[core]\nfixed_lot = -1\n")
    done = echo(py, "service", "install", "--config", windows_path(bad), "--name", "EchoBad")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "echo-copier service: configuration error: core.fixed_lot must be > 0, got -1"
    ]
