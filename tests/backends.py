"""Real servers for the tests that need them: the local PostgreSQL and throwaway etcd instances.

Outside CI a missing server skips those tests and ``conftest`` prints a loud summary line; with
``CI=true`` a missing server fails them (CI installs and starts both)."""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from echo.adapters.store.postgres import split_url

POSTGRES_URL = os.environ.get("ECHO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SKIPPED: dict[str, str] = {}
"""Backend -> why its tests were skipped (for the summary line)."""


def unavailable(backend: str, why: str) -> None:
    """Fail in CI, skip (and remember, for the summary) elsewhere."""
    if IN_CI:
        pytest.fail(f"{backend} is required in CI and is not available: {why}")
    SKIPPED[backend] = why
    pytest.skip(f"{backend} not available: {why}")


@functools.cache
def _postgres_problem() -> str | None:
    conninfo, _ = split_url(POSTGRES_URL)
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{POSTGRES_URL}: {exc}".strip()
    return None


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL on a fresh schema of the test database, dropped afterwards."""
    problem = _postgres_problem()
    if problem is not None:
        unavailable("postgres", problem)
    schema = f"t_{secrets.token_hex(6)}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        conninfo, _ = split_url(POSTGRES_URL)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def etcd_server() -> Iterator[str]:
    """A throwaway etcd on free ports; yields its ``etcd://`` URL."""
    import shutil
    import subprocess
    import tempfile
    import time

    binary = shutil.which("etcd")
    if binary is None:
        unavailable("etcd", "no etcd binary on PATH (Debian: apt-get install etcd-server)")
    client, peer = _free_port(), _free_port()
    data = tempfile.mkdtemp(prefix="echo-etcd-")
    proc = subprocess.Popen(
        [
            str(binary),
            "--data-dir",
            data,
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", client), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    unavailable("etcd", f"etcd did not start (exit {proc.poll()})")
                time.sleep(0.05)
        yield f"etcd://127.0.0.1:{client}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)
