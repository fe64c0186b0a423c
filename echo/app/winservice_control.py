"""``echo-copier service install|uninstall|start|stop|status``: the Echo service (``echo.app.winservice``)
registered with, started, stopped and read back from the Windows Service Control Manager through
pywin32's ``win32service``. Windows only: elsewhere the module defines nothing else, and only the CLI on
Windows imports it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from echo.app.winservice import (
    RESET_AFTER_S,
    RESTART_DELAYS_MS,
    WAIT_S,
    command_line,
    log_path,
)
from echo.app.winservice import (
    ServiceError as ServiceError,
)
from echo.domain.config import Config
from echo.domain.paths import DATA_FOLDER

if sys.platform == "win32":
    import pywintypes
    import win32service

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
