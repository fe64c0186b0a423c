"""Echo as a Windows service: ``echo-copier service install|uninstall|start|stop|status`` through the
Service Control Manager, and the service process itself (``python -m echo.app.winservice``).

Built on pywin32's service framework (``win32service``, ``win32serviceutil``, ``servicemanager``): the
maintained binding of the Win32 service API that Python services on Windows are usually written with.
The service is the interpreter that installed it running this module (not pywin32's
``pythonservice.exe``, which would have to be copied next to the interpreter): its command line names the
configuration, the role (``all``: Core and an Agent; ``agent``: an Agent joined to a Core elsewhere) and
the log file. It starts at boot (auto start), is restarted by the Service Control Manager after a failure
(5 s, 30 s, then 60 s; the count resets after a day), logs JSON lines to a file rotated by size
(``log.file``, or ``echo-service.log`` in the data folder, ``%PROGRAMDATA%\\Echo``), and on a stop
request cancels its trio run: the store is closed and the pipe released before it reports stopped.

``serve`` and ``Stopper`` run anywhere (they are tested on every OS); the Service Control Manager part is
defined on Windows only, and only the CLI on Windows imports it.
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
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from echo.domain.config import Config
from echo.domain.paths import DATA_FOLDER, in_data_folder

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
    from echo.app.root import load_config, open_config, run_agent, run_all_in_one, terminals_at

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

    import pywintypes
    import servicemanager
    import win32service
    import win32serviceutil

    from echo.adapters.pipe.winpipe import current_user_sid

    _ACCESS_DENIED = 5
    _SERVICE_ALREADY_RUNNING = 1056
    _SERVICE_DOES_NOT_EXIST = 1060
    _SERVICE_NOT_ACTIVE = 1062
    _SERVICE_EXISTS = 1073
    _INVALID_LEVEL = 124
    _STATES = {
        win32service.SERVICE_STOPPED: "stopped",
        win32service.SERVICE_START_PENDING: "starting",
        win32service.SERVICE_STOP_PENDING: "stopping",
        win32service.SERVICE_RUNNING: "running",
        win32service.SERVICE_CONTINUE_PENDING: "continuing",
        win32service.SERVICE_PAUSE_PENDING: "pausing",
        win32service.SERVICE_PAUSED: "paused",
    }
    _START_TYPES = {
        win32service.SERVICE_AUTO_START: "automatic (at boot)",
        win32service.SERVICE_DEMAND_START: "manual",
        win32service.SERVICE_DISABLED: "disabled",
    }

    def _problem(exc: pywintypes.error, name: str, doing: str) -> ServiceError:
        code = exc.winerror
        if code == _ACCESS_DENIED:
            return ServiceError(f"{doing} needs an elevated prompt (Run as administrator)")
        if code == _SERVICE_DOES_NOT_EXIST:
            return ServiceError(f"the service {name} is not installed")
        if code == _SERVICE_EXISTS:
            return ServiceError(f"the service {name} is already installed (uninstall it first)")
        if code == _SERVICE_ALREADY_RUNNING:
            return ServiceError(f"the service {name} is already running")
        if code == _SERVICE_NOT_ACTIVE:
            return ServiceError(f"the service {name} is not running")
        return ServiceError(f"{doing}: {exc.strerror} (Windows error {code})")

    class _Manager:
        """The Service Control Manager and one service's handle, closed on leaving."""

        def __init__(self, name: str, doing: str, *, create: bool = False) -> None:
            self.name, self.doing = name, doing
            access = win32service.SC_MANAGER_ALL_ACCESS if create else win32service.SC_MANAGER_CONNECT
            try:
                self.scm = win32service.OpenSCManager(None, None, access)
            except pywintypes.error as exc:
                raise _problem(exc, name, doing) from None
            self.service: object | None = None

        def open(self, access: int = win32service.SERVICE_ALL_ACCESS) -> object:
            try:
                self.service = win32service.OpenService(self.scm, self.name, access)
            except pywintypes.error as exc:
                raise _problem(exc, self.name, self.doing) from None
            return self.service

        def __enter__(self) -> _Manager:
            return self

        def __exit__(self, *exc: object) -> None:
            if self.service is not None:
                win32service.CloseServiceHandle(self.service)
            win32service.CloseServiceHandle(self.scm)

    def install(spec: str, role: str, name: str, config: Config) -> str:
        """Register the service (auto start, restart on failure); returns what was installed."""
        log_file = log_path(config)
        folder = Path(log_file).parent
        if folder == Path(DATA_FOLDER).absolute():
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise ServiceError(f"the log file's folder {folder} does not exist (log.file)")
        # the service runs as SYSTEM: the terminals of the user installing it may open its pipe too
        installer = current_user_sid()
        cmd = command_line(spec, role, name, log_file, installer)
        with _Manager(name, "installing a service", create=True) as m:
            if _exists(m):  # asked first: Wine's CreateService replaces a service of the same name
                raise ServiceError(f"the service {name} is already installed (uninstall it first)")
            try:
                m.service = win32service.CreateService(
                    m.scm,
                    name,
                    f"Echo trade copier ({name})",
                    win32service.SERVICE_ALL_ACCESS,
                    win32service.SERVICE_WIN32_OWN_PROCESS,
                    win32service.SERVICE_AUTO_START,
                    win32service.SERVICE_ERROR_NORMAL,
                    cmd,
                    None,
                    0,
                    None,
                    None,
                    None,
                )
            except pywintypes.error as exc:
                raise _problem(exc, name, "installing a service") from None
            try:
                _configure(m.service)
            except BaseException:
                win32service.DeleteService(m.service)  # never half installed
                raise
        return (
            f"installed the service {name} ({role}); it starts at boot; log {log_file}; "
            f"its pipe admits this user's terminals ({installer})"
        )

    def _exists(m: _Manager) -> bool:
        try:
            service = win32service.OpenService(m.scm, m.name, win32service.SERVICE_QUERY_STATUS)
        except pywintypes.error as exc:
            if exc.winerror == _SERVICE_DOES_NOT_EXIST:
                return False
            raise _problem(exc, m.name, m.doing) from None
        win32service.CloseServiceHandle(service)
        return True

    def _configure(service: object) -> None:
        """Description and failure actions: restart after 5 s, 30 s, then 60 s."""
        win32service.ChangeServiceConfig2(
            service,
            win32service.SERVICE_CONFIG_DESCRIPTION,
            "Copies MetaTrader trades from master to slave accounts (echo-copier).",
        )
        actions = [(win32service.SC_ACTION_RESTART, ms) for ms in RESTART_DELAYS_MS]
        win32service.ChangeServiceConfig2(
            service,
            win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
            {"ResetPeriod": RESET_AFTER_S, "RebootMsg": None, "Command": None, "Actions": actions},
        )
        # an exit reported with an error counts as a failure too, not only a crash (the service ends its
        # process on an error, a crash, so the restart does not depend on this flag; Wine lacks it)
        try:
            win32service.ChangeServiceConfig2(service, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
        except pywintypes.error as exc:
            if exc.winerror != _INVALID_LEVEL:
                raise

    def uninstall(name: str) -> str:
        with _Manager(name, "uninstalling a service", create=True) as m:
            service = m.open()
            state = win32service.QueryServiceStatus(service)[1]
            if state != win32service.SERVICE_STOPPED:
                raise ServiceError(f"the service {name} is {_STATES.get(state, state)}; stop it first")
            try:
                win32service.DeleteService(service)
            except pywintypes.error as exc:
                raise _problem(exc, name, "uninstalling a service") from None
        return f"the service {name} is uninstalled"

    def _wait_for(service: object, want: int) -> int:
        deadline = WAIT_S
        state = win32service.QueryServiceStatus(service)[1]
        while state != want and deadline > 0:
            if want == win32service.SERVICE_RUNNING and state == win32service.SERVICE_STOPPED:
                break
            time.sleep(0.2)  # the Service Control Manager has no call that waits for a state
            deadline -= 0.2
            state = win32service.QueryServiceStatus(service)[1]
        return int(state)

    def start(name: str) -> str:
        with _Manager(name, "starting a service") as m:
            service = m.open(win32service.SERVICE_START | win32service.SERVICE_QUERY_STATUS)
            try:
                win32service.StartService(service, None)
            except pywintypes.error as exc:
                raise _problem(exc, name, "starting a service") from None
            state = _wait_for(service, win32service.SERVICE_RUNNING)
            if state != win32service.SERVICE_RUNNING:
                now = _STATES.get(state, state)
                raise ServiceError(f"the service {name} did not start ({now}); see its log ({status_log(m)})")
        return f"the service {name} is running"

    def stop(name: str) -> str:
        with _Manager(name, "stopping a service") as m:
            service = m.open(win32service.SERVICE_STOP | win32service.SERVICE_QUERY_STATUS)
            try:
                win32service.ControlService(service, win32service.SERVICE_CONTROL_STOP)
            except pywintypes.error as exc:
                raise _problem(exc, name, "stopping a service") from None
            state = _wait_for(service, win32service.SERVICE_STOPPED)
            if state != win32service.SERVICE_STOPPED:
                raise ServiceError(f"the service {name} is still {_STATES.get(state, state)}")
        return f"the service {name} is stopped"

    def status_log(m: _Manager) -> str:
        """The log file named on the installed service's command line."""
        service = win32service.OpenService(m.scm, m.name, win32service.SERVICE_QUERY_CONFIG)
        try:
            cmd = win32service.QueryServiceConfig(service)[3]
        finally:
            win32service.CloseServiceHandle(service)
        words = _split(cmd)
        return words[words.index("--log") + 1] if "--log" in words else "?"

    def _split(cmd: str) -> list[str]:
        import ctypes

        argc = ctypes.c_int()
        shell32 = ctypes.WinDLL("shell32")
        shell32.CommandLineToArgvW.restype = ctypes.POINTER(ctypes.c_wchar_p)
        argv = shell32.CommandLineToArgvW(cmd, ctypes.byref(argc))
        try:
            return [argv[i] for i in range(argc.value)]
        finally:
            ctypes.windll.kernel32.LocalFree(argv)

    def status(name: str) -> tuple[bool, list[str]]:
        """(running?, lines): the state, start type, failure actions, command and log."""
        with _Manager(name, "reading a service's status") as m:
            service = m.open(win32service.SERVICE_QUERY_STATUS | win32service.SERVICE_QUERY_CONFIG)
            state = win32service.QueryServiceStatusEx(service)
            config = win32service.QueryServiceConfig(service)
            try:
                failure = win32service.QueryServiceConfig2(
                    service, win32service.SERVICE_CONFIG_FAILURE_ACTIONS
                )
            except pywintypes.error:
                failure = None
            running = state["CurrentState"] == win32service.SERVICE_RUNNING
            lines = [
                f"service {name}: {_STATES.get(state['CurrentState'], state['CurrentState'])}"
                + (f" (pid {state['ProcessId']})" if running else ""),
                f"start: {_START_TYPES.get(config[1], config[1])}",
            ]
            if failure and failure.get("Actions"):
                delays = ", ".join(
                    f"{ms / 1000:g} s"
                    for kind, ms in failure["Actions"]
                    if kind == win32service.SC_ACTION_RESTART
                )
                lines.append(f"on failure: restart after {delays}")
            else:
                lines.append("on failure: nothing")
            lines.append(f"command: {config[3]}")
            words = _split(config[3])
            if "--log" in words:
                lines.append(f"log: {words[words.index('--log') + 1]}")
            if "--pipe-users" in words:
                lines.append(f"pipe users: {words[words.index('--pipe-users') + 1]}")
        return running, lines

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
