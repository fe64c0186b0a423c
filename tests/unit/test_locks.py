"""The claims a process makes at start: a lock file naming its holder, and the folders its files go in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from echo.adapters.locks import FileLock, InUse, StartError, parent_folder


def test_a_lock_names_its_holder_and_is_free_again_once_released(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock.lock"
    with FileLock(path, "socket echo.sock"):
        # another process (a lock is per open file: a second one in this process would be refused too)
        probe = (
            "import sys\nfrom echo.adapters.locks import FileLock, InUse\n"
            f"try:\n    FileLock({str(path)!r}, 'socket echo.sock').acquire()\n"
            "except InUse as exc:\n    print(exc)\n    sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
        assert other.returncode == 3, other.stderr
        assert other.stdout.startswith(f"socket echo.sock is in use by another copier (pid {os.getpid()} on ")
        with pytest.raises(InUse, match=f"lock {path}"):
            FileLock(path, "socket echo.sock").acquire()
    again = FileLock(path, "socket echo.sock")
    again.acquire()
    assert again.held
    again.release()
    assert path.exists(), "the lock file stays (removing it would let two processes lock two files)"


def test_a_lock_left_by_a_dead_process_is_free(tmp_path: Path) -> None:
    path = tmp_path / "echo.db.lock"
    code = f"from echo.adapters.locks import FileLock\nFileLock({str(path)!r}, 'the store').acquire()\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)  # exits holding it
    with FileLock(path, "the store") as lock:
        assert lock.held


def test_a_lock_file_that_cannot_be_opened_is_a_start_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StartError, match=f"socket x: cannot open its lock file {tmp_path / 'no' / 'x.lock'}"):
        FileLock(tmp_path / "no" / "x.lock", "socket x").acquire()


def test_only_the_default_data_folder_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parent_folder("var/echo.db", "store.url") == Path("var") and (tmp_path / "var").is_dir()
    with pytest.raises(StartError, match=r"store\.url data/echo\.db: the folder data does not exist"):
        parent_folder("data/echo.db", "store.url")
    with pytest.raises(StartError, match=r"var/x/echo\.sock: the folder var/x does not exist"):
        parent_folder("var/x/echo.sock", "agent.socket_path")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="file is not a folder"):
        parent_folder("file/echo.db", "store.url", ValueError)
    assert not (tmp_path / "data").exists()
