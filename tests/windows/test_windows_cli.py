"""The CLI as it runs on Windows: the Windows build of Python from PyPI under Wine, with Echo on its path.
Nothing POSIX-only may run at import or start-up; a changed configuration file applies without SIGHUP
(which Windows has not); Ctrl-C stops the copier cleanly; the default data folder is %PROGRAMDATA%\\Echo;
``run --pipe NAME`` serves the pipe it names."""

from __future__ import annotations

import secrets
import shutil
import signal
from pathlib import Path

import pytest
import trio

from echo import __version__
from tests.backends import free_port
from tests.windows.wine import read_until, windows_path, wine_python

pytestmark = pytest.mark.e2e


def test_help_version_and_the_default_data_folder() -> None:
    py = wine_python()
    done = py.run("-m", "echo", "--help")
    assert done.returncode == 0, done.stderr
    assert "run the copier" in done.stdout
    done = py.run("-m", "echo", "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"echo-copier {__version__}")
    done = py.run("-m", "echo", "show", "--help")
    assert done.returncode == 0, done.stderr
    assert "sqlite:///C:\\ProgramData\\Echo\\echo.db" in " ".join(done.stdout.split())
    done = py.run("-c", "from echo.domain.config import Config; print(Config().store.url)")
    assert done.stdout.strip() == "sqlite:///C:\\ProgramData\\Echo\\echo.db", done.stderr


def test_config_validate(tmp_path: Path) -> None:
    py = wine_python()
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[store]\nurl = "memory://"\n[core]\nfixed_lot = 0.2\n')
    bad.write_text("[core]\nfixed_lot = -1\n")
    done = py.run("-m", "echo", "config", "--config", windows_path(good), "validate")
    assert (done.returncode, done.stdout.strip()) == (0, f"{windows_path(good)}: valid"), done.stderr
    done = py.run("-m", "echo", "config", "--config", windows_path(bad), "validate")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["echo-copier config: core.fixed_lot must be > 0, got -1"], (
        done.stderr
    )


async def test_a_changed_config_file_applies_live_and_ctrl_c_stops(tmp_path: Path) -> None:
    """No SIGHUP on Windows: the running copier watches its file. A bad edit is refused and the last good
    configuration stays; Ctrl-C (SIGINT to Wine becomes a console Ctrl-C) stops it with status 0."""
    py = wine_python()
    config = tmp_path / "echo.toml"
    listen = f'[store]\nurl = "memory://"\n[split]\nlisten = "127.0.0.1:{free_port()}"\n'
    config.write_text(listen)
    seen = bytearray()
    with trio.fail_after(90):
        core = await py.start("-m", "echo", "run", "--role", "core", "--config", windows_path(config))
        try:
            await read_until(core, b"(changes apply live). Ctrl-C or Ctrl-Break stops.", seen)
            config.write_text(listen + "[core]\nfixed_lot = 0.2\n")
            await read_until(core, b"config_applied", seen)
            config.write_text(listen + "[core]\nfixed_lot = -1\n")
            await read_until(core, b"config_rejected", seen)
            assert b"core.fixed_lot must be > 0" in seen
            core.send_signal(signal.SIGINT)
            await read_until(core, b"echo-copier: SIGINT, stopping", seen)
            assert await core.wait() == 0, seen.decode(errors="replace")
        finally:
            if core.returncode is None:
                core.kill()
                await core.wait()
    assert b"Traceback" not in seen, seen.decode(errors="replace")


async def test_run_keeps_its_files_in_programdata_by_default(tmp_path: Path) -> None:
    """With no store configured the copier creates %PROGRAMDATA%\\Echo and keeps its store there (the
    folder is the Wine prefix's own: emptied before and after)."""
    py = wine_python()
    folder = py.home / "prefix" / "drive_c" / "ProgramData" / "Echo"
    shutil.rmtree(folder, ignore_errors=True)
    config = tmp_path / "echo.toml"
    config.write_text("[agent]\npipe_name = 'not-this-one'\n")
    pipe = f"echo-test-{secrets.token_hex(4)}"  # --pipe overrides agent.pipe_name
    seen = bytearray()
    try:
        with trio.fail_after(90):
            copier = await py.start("-m", "echo", "run", "--config", windows_path(config), "--pipe", pipe)
            try:
                await read_until(copier, b"Ctrl-C or Ctrl-Break stops.", seen)
                assert b"store sqlite:///C:\\ProgramData\\Echo\\echo.db;" in seen
                assert f"terminals connect to \\\\.\\pipe\\{pipe};".encode() in seen
                assert (folder / "echo.db").is_file()
                copier.send_signal(signal.SIGINT)
                assert await copier.wait() == 0
            finally:
                if copier.returncode is None:
                    copier.kill()
                    await copier.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
