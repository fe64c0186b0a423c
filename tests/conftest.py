"""Shared test setup: structured logs go to a buffer (tests assert on them with capture_logs).

``make test`` runs the tests on several processes (pytest-xdist, ``--dist loadgroup``): what a worker
learns for the end-of-run lines (backends skipped, files written to ``var/``) travels to the controller in
its ``workeroutput``, and the controller prints them and sets the exit status."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from echo.app.logs import configure

configure("json", "debug", stream=io.StringIO())

# The property tests check what a function does, not how fast: this machine is shared, and a 200 ms
# deadline failed a config-parsing example once under load. Each test's own settings still apply on top.
settings.register_profile("echo", deadline=None)
settings.load_profile("echo")

_REPO_VAR = Path(__file__).resolve().parents[1] / "var"
"""The repository's data folder, which ``run`` uses by default: tests write to temporary folders only."""
_WINDOWS = Path(__file__).resolve().parent / "windows"
"""Its tests run together on one pytest-xdist worker (``pytest_xdist_make_scheduler``)."""


def _files_in(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


_VAR_BEFORE = _files_in(_REPO_VAR)
_VAR_WRITERS: dict[str, list[str]] = {}
"""File in the repository's ``var/`` -> the tests after which it had changed (with several workers, a
test that ran beside the writer may be named too)."""


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


_OWN_PREFIX = ("test_service.py::test_install_start_copy_stop_uninstall",)
"""Windows tests in a Wine prefix of their own (``test_service.py``'s ``py`` fixture): they need not wait
for the others."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Windows tests first: with pytest-xdist they then start at once beside everything else instead
    of making the whole run wait for them at its end."""
    windows = [i for i in items if _WINDOWS in i.path.parents]
    items[:] = windows + [i for i in items if _WINDOWS not in i.path.parents]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's ``load`` (and ``loadgroup``) scheduling, with the Windows tests that share the
    prepared Wine prefix (its wineserver, its named pipes) in one work unit: they run one after another on
    one worker, first (the largest unit goes first). (The ``xdist_group`` mark cannot do it: pytest-xdist
    3.8 renames node ids through an attribute pytest 9 no longer reads.)"""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadGroupScheduling

    windows = f"{_WINDOWS.relative_to(config.rootpath).as_posix()}/"
    own = tuple(windows + name for name in _OWN_PREFIX)

    class SharedPrefixTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(windows) and not nodeid.startswith(own):
                return "windows"
            return super()._split_scope(nodeid)

    return SharedPrefixTogether(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    before = _files_in(_REPO_VAR)
    result = yield
    for name, mtime in _files_in(_REPO_VAR).items():
        if before.get(name) != mtime:
            _VAR_WRITERS.setdefault(name, []).append(item.nodeid)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.backends import SKIPPED

    if _is_worker(session.config):  # the controller judges and prints, from what each worker sends
        out: dict[str, Any] = session.config.workeroutput  # type: ignore[attr-defined]
        out["echo_skipped"] = dict(SKIPPED)
        out["echo_var_writers"] = _VAR_WRITERS
        return
    touched = sorted(n for n, t in _files_in(_REPO_VAR).items() if _VAR_BEFORE.get(n) != t)
    if touched:
        # a later `run` would open them as its own (an ack ledger of the default agent, say)
        by = "; ".join(f"{n} by {', '.join(_VAR_WRITERS.get(n, ['?']))}" for n in touched)
        print(f"\n!!! TESTS WROTE TO {_REPO_VAR}: {by} (tests use temporary folders only)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """A worker is done (pytest-xdist, on the controller): keep what it learnt for the end-of-run lines."""
    from tests.backends import SKIPPED

    out = getattr(node, "workeroutput", {})
    SKIPPED.update(out.get("echo_skipped", {}))
    for name, tests in out.get("echo_var_writers", {}).items():
        _VAR_WRITERS.setdefault(name, []).extend(tests)


def pytest_terminal_summary(terminalreporter: object) -> None:
    from tests.backends import SKIPPED

    for backend, why in sorted(SKIPPED.items()):
        terminalreporter.write_line(  # type: ignore[attr-defined]
            f"!!! {backend.upper()} TESTS SKIPPED: {why} (with CI=true they fail instead)",
            red=True,
            bold=True,
        )
