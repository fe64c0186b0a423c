"""Real servers for the tests that need them: the local PostgreSQL and throwaway etcd instances.

Outside CI a missing server skips those tests and ``conftest`` prints a loud summary line; with
``CI=true`` a missing server fails them (CI installs and starts both)."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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


def _port_range() -> range:
    """The ports ``free_port`` picks from: below the kernel's ephemeral range (so that no outgoing
    connection takes one between its pick and its server's bind), this worker's own slice of it (so that two
    pytest-xdist workers never pick the same one)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = min(low, 32768)
    start = max(top - 12288, 10000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker) if worker.isdigit() else 0
    size = (top - start) // max(count, 1)
    return range(start + index * size, start + (index + 1) * size)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, never the same twice in one process."""
    ports = _port_range()
    for _ in range(200):
        port = secrets.choice(ports)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # the slice is crowded: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """A throwaway etcd on free ports, which a test may pause, kill and start again (same data, same port)."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        binary = shutil.which("etcd")
        if binary is None:
            unavailable("etcd", "no etcd binary on PATH (Debian: apt-get install etcd-server)")
        self.binary = str(binary)
        self.client, self.peer = free_port(), free_port()
        self.data = tempfile.mkdtemp(prefix="echo-etcd-")
        self.url = f"etcd://127.0.0.1:{self.client}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--data-dir",
                self.data,
                "--listen-client-urls",
                f"http://127.0.0.1:{self.client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{self.peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.client), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    unavailable("etcd", f"etcd did not start (exit {self.proc.poll()})")
                time.sleep(0.05)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        import shutil

        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def etcd_server() -> Iterator[str]:
    """A throwaway etcd on free ports; yields its ``etcd://`` URL."""
    with etcd_instance() as server:
        yield server.url


@contextmanager
def etcd_instance() -> Iterator[EtcdServer]:
    server = EtcdServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 / localhost, made by the ``openssl`` binary."""
    binary = shutil.which("openssl")
    if binary is None:
        unavailable("openssl", "no openssl binary on PATH (Debian: apt-get install openssl)")
        raise AssertionError("unreachable")
    cert, key = directory / "core.pem", directory / "core.key"
    subprocess.run(
        [
            *(binary, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=echo-core"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class PostgresCluster:
    """A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free port, which a test may stop and
    start again (same data, same port); never the machine's shared server. As root, the server runs as the
    ``postgres`` user (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        import tempfile

        self.bindir = self._bindir()
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix="echo-pg-"))
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("postgres cluster", "running as root and there is no postgres user to run it as")
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("postgres cluster", "running as root and there is no runuser binary")
            os.chown(self.data, owner.pw_uid, owner.pw_gid)
            self._as = [str(runuser), "-u", "postgres", "--"]

    @staticmethod
    def _bindir() -> Path:
        config = shutil.which("pg_config")
        candidates: list[Path] = []
        if config is not None:
            out = subprocess.run([config, "--bindir"], capture_output=True, text=True, check=False)
            candidates.append(Path(out.stdout.strip()))
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        for d in candidates:
            if (d / "initdb").exists() and (d / "pg_ctl").exists():
                return d
        unavailable("postgres cluster", "no initdb/pg_ctl (pg_config --bindir, /usr/lib/postgresql/*/bin)")
        raise AssertionError("unreachable")

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data / "db"), "-U", "postgres", "--auth=trust", "-N"
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data / "db"),
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data / "db"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster, started; removed afterwards."""
    cluster = PostgresCluster()
    try:
        try:
            cluster.init()
            cluster.start()
        except RuntimeError as exc:
            unavailable("postgres cluster", str(exc))
        yield cluster
    finally:
        cluster.destroy()


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Path]) -> Path:
    """``make(folder)``'s result, made once for the whole test run: with pytest-xdist the first worker to
    ask makes it in a folder all workers share (under a lock), the others wait for it and reuse it."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent  # the run's folder, above each worker's own
    folder = base / f"once-{name}"
    folder.mkdir(exist_ok=True)
    done = folder / "DONE"
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return Path(done.read_text())
        made = make(folder)
        done.write_text(str(made))
        return made
