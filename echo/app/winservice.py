"""Echo as a Windows service: the service process itself (``python -m echo.app.winservice``); installing
and controlling it through the Service Control Manager is ``echo.app.winservice_control``.

Built on pywin32's service framework (``win32service``, ``win32serviceutil``, ``servicemanager``): the
maintained binding of the Win32 service API that Python services on Windows are usually written with.
The service is the interpreter that installed it running this module (not pywin32's
``pythonservice.exe``, which would have to be copied next to the interpreter): its command line names the
configuration, the role (``all``: Core and an Agent; ``agent``: an Agent joined to a Core elsewhere) and
the log file. It starts at boot (auto start), is restarted by the Service Control Manager after a failure
(5 s, 30 s, then 60 s; the count resets after a day), logs JSON lines to a file rotated by size
(``log.file``, or ``echo-service.log`` in the data folder, ``%PROGRAMDATA%\\Echo``), and on a stop
request cancels its trio run: the store is closed and the pipe released before it reports stopped.

``serve``, ``run`` and ``Stopper`` run anywhere (they are tested on every OS); the service class is defined
on Windows only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from echo.domain.config import Config
from echo.domain.paths import in_data_folder

log = structlog.get_logger("echo.service")

SERVICE_NAME = "EchoCopier"
ROLES = ("all", "agent")
RESTART_DELAYS_MS = (5_000, 30_000, 60_000)
"""After the first, second and every later failure, the Service Control Manager restarts it after these."""
RESET_AFTER_S = 24 * 3600
"""A day without a failure and the next one counts as the first again."""
WAIT_S = 60.0
"""How long ``start`` and ``stop`` wait for the service to report running or stopped."""


class ServiceError(Exception):
    """Something a person can put right (not elevated, not installed, ...), said in one line."""


def log_path(config: Config) -> str:
    """The service's log: ``log.file``, or ``echo-service.log`` in the data folder."""
    return os.path.abspath(config.log.file or in_data_folder("echo-service.log"))


def command_line(spec: str, role: str, name: str, log_file: str, pipe_users: str = "") -> str:
    """The command the Service Control Manager starts: this interpreter running this module. From a
    virtual environment it is the environment's base interpreter (the environment's ``python.exe`` only
    launches that one as a child, which the Service Control Manager would not recognise), with the
    environment's packages added first. ``pipe_users`` (accounts, comma-separated) are granted the named
    pipe beside those of ``agent.pipe_users``."""
    args = ["--name", name, "--role", role, "--config", spec, "--log", log_file]
    if pipe_users:
        args += ["--pipe-users", pipe_users]
    if sys.prefix == sys.base_prefix:
        return subprocess.list2cmdline([sys.executable, "-m", "echo.app.winservice", *args])
    base = getattr(sys, "_base_executable", sys.executable)
    site = sysconfig.get_paths()["purelib"]
    boot = (
        f"import runpy, site; site.addsitedir({site!r}); "
        "runpy.run_module('echo.app.winservice', run_name='__main__', alter_sys=True)"
    )
    return subprocess.list2cmdline([base, "-c", boot, *args])


class Stopper:
    """Stops a trio run from another thread (the Service Control Manager's handler thread), whether the
    request comes before the run has started, while it runs, or after it ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self.requested = False

    def attach(self, scope: trio.CancelScope) -> None:
        """Called inside the run: from now on ``stop`` cancels ``scope``."""
        with self._lock:
            self._token, self._scope = trio.lowlevel.current_trio_token(), scope
            if self.requested:
                scope.cancel()

    def stop(self) -> None:
        with self._lock:
            self.requested = True
            if self._token is None or self._scope is None:
                return
            with contextlib.suppress(trio.RunFinishedError):  # the run is over: nothing to stop
                self._token.run_sync_soon(self._scope.cancel)


async def serve(
    spec: str, role: str, stopper: Stopper, on_running: Callable[[], None], pipe_users: str = ""
) -> None:
    """Run the copier (``all``) or an Agent (``agent``) from the configuration ``spec`` until ``stopper``
    stops it, calling ``on_running`` once it serves; a changed configuration applies live as with ``run``.
    ``pipe_users`` are added to ``agent.pipe_users``. Returns once everything is closed."""
    from echo.app.root import load_config, open_config, run_agent, run_all_in_one, settle_heap, terminals_at

    with trio.CancelScope() as scope:
        stopper.attach(scope)
        async with open_config(spec) as source, trio.open_nursery() as nursery:
            config = with_pipe_users(await load_config(source), pipe_users)
            if role == "agent":
                await nursery.start(run_agent, config)
            else:
                running = await nursery.start(functools.partial(run_all_in_one, config, config_source=source))
                running.source_config = config
            log.info("service_running", role=role, terminals_at=terminals_at(config), config=spec)
            settle_heap()
            on_running()
    log.info("service_stopped", role=role)


def with_pipe_users(config: Config, extra: str) -> Config:
    """``config`` with the accounts ``extra`` (comma-separated) added to ``agent.pipe_users``."""
    users = [*config.agent.pipe_user_list(), *(u.strip() for u in extra.split(",") if u.strip())]
    return dataclasses.replace(config, agent=dataclasses.replace(config.agent, pipe_users=", ".join(users)))


def run(
    spec: str,
    role: str,
    log_file: str,
    stopper: Stopper,
    on_running: Callable[[], None],
    pipe_users: str = "",
) -> None:
    """The service's body: logs to the rotated ``log_file``, serves until stopped. An error is logged
    and raised (the caller ends the process so that the Service Control Manager restarts it)."""
    from echo.app.logfile import RotatingLogFile
    from echo.app.logs import configure

    Path(log_file).parent.mkdir(parents=True, exist_ok=True)  # checked at install; gone since?
    before = structlog.get_config()
    with RotatingLogFile(log_file) as out:
        configure("json", "info", stream=out)  # type: ignore[arg-type]  # a text stream: write/flush
        try:
            trio.run(serve, spec, role, stopper, on_running, pipe_users)
        except BaseException:
            log.exception("service_failed", role=role, config=spec)
            raise
        finally:  # nothing may log into the closed file afterwards (a service started again in this process)
            structlog.configure(**before)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="echo.app.winservice")
    p.add_argument("--name", default=SERVICE_NAME)
    p.add_argument("--role", choices=ROLES, default="all")
    p.add_argument("--config", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pipe-users", default="")
    return p.parse_args(argv)


if sys.platform == "win32":
    import traceback

    import servicemanager
    import win32service
    import win32serviceutil

    class EchoService(win32serviceutil.ServiceFramework):
        """The service process: runs ``run`` on its own thread's trio loop; a stop request cancels it."""

        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = "Echo trade copier"
        options: argparse.Namespace

        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            self.stopper = Stopper()

        def SvcStop(self) -> None:  # pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=30_000)
            self.stopper.stop()

        SvcShutdown = SvcStop  # the machine shutting down: the same clean stop

        def SvcRun(self) -> None:  # pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_START_PENDING, waitHint=60_000)
            o = self.options

            def running() -> None:
                self.ReportServiceStatus(win32service.SERVICE_RUNNING)

            try:
                run(o.config, o.role, o.log, self.stopper, running, o.pipe_users)
            except BaseException:  # end the process so the manager restarts it
                # run() logged it to the file; the Windows event log has it too (in case the file could not
                # be opened)
                servicemanager.LogErrorMsg(f"{self._svc_name_}: {traceback.format_exc()}")
                os._exit(1)
            self.ReportServiceStatus(win32service.SERVICE_STOPPED)

    def host(argv: list[str]) -> None:
        """The process the Service Control Manager started: hand control to it."""
        options = parse_args(argv)
        EchoService.options = options
        EchoService._svc_name_ = options.name
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(EchoService)
        servicemanager.StartServiceCtrlDispatcher()


if __name__ == "__main__" and sys.platform == "win32":
    host(sys.argv[1:])
