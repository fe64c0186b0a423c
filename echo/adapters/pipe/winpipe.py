"""EA connections over a Windows named pipe, ``\\\\.\\pipe\\NAME``, on trio's IOCP (overlapped I/O).

trio has no public named-pipe server, so this is built on what it does have: each pipe instance is
created overlapped (``_winapi.CreateNamedPipe``), registered with trio's I/O completion port once, and
then waited for a terminal (``ConnectNamedPipe``), read and written with overlapped calls. One instance
serves one terminal; as soon as one is connected the next is created, so any number can connect. The
bytes are the same line protocol as on the Unix socket, with the same limits (the Agent applies them).

Who may connect: local clients only (``PIPE_REJECT_REMOTE_CLIENTS``), and of those only this process's
user, SYSTEM, the Administrators and the accounts of ``agent.pipe_users`` (read and write; for the
service, which runs as SYSTEM, the user who installed it): the pipe's security descriptor grants no one
else, not Everyone.
The first instance is created with ``FILE_FLAG_FIRST_PIPE_INSTANCE``: a second copier on the same name
stops at start naming it, instead of sharing the name.

Windows only: on other systems the module defines nothing but ``pipe_path``.
"""

from __future__ import annotations

import sys

PIPE_PREFIX = "\\\\.\\pipe\\"


def pipe_path(name: str) -> str:
    """The pipe's full name, ``\\\\.\\pipe\\NAME``."""
    return PIPE_PREFIX + name


if sys.platform == "win32":
    import _overlapped
    import _winapi
    import contextlib
    import ctypes
    from ctypes import wintypes

    import trio

    from echo.adapters.locks import InUse, StartError
    from echo.ports.pipe import ConnectionHandler

    _FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
    _PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
    _PIPE_TYPE_BYTE = _PIPE_READMODE_BYTE = 0
    _ERROR_ACCESS_DENIED = 5
    _ERROR_NO_DATA = 232
    _BROKEN = {109, 232, 233, 995}
    """ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED, ERROR_OPERATION_ABORTED."""
    _BUFFER = 65536

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = [
            ("nLength", wintypes.DWORD),
            ("lpSecurityDescriptor", wintypes.LPVOID),
            ("bInheritHandle", wintypes.BOOL),
        ]

    def _dlls() -> tuple[ctypes.WinDLL, ctypes.WinDLL]:
        """advapi32 and kernel32 with the signatures used here (private copies: nothing global changes)."""
        advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle, dword = wintypes.HANDLE, wintypes.DWORD
        kernel32.GetCurrentProcess.restype = handle
        kernel32.GetCurrentProcess.argtypes = []
        kernel32.CloseHandle.argtypes = [handle]
        kernel32.LocalFree.argtypes = [ctypes.c_void_p]
        kernel32.LocalFree.restype = ctypes.c_void_p
        advapi32.OpenProcessToken.argtypes = [handle, dword, ctypes.POINTER(handle)]
        advapi32.GetTokenInformation.argtypes = [
            handle,
            ctypes.c_int,
            ctypes.c_void_p,
            dword,
            ctypes.POINTER(dword),
        ]
        advapi32.ConvertSidToStringSidW.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        advapi32.ConvertStringSidToSidW.argtypes = [wintypes.LPCWSTR, ctypes.POINTER(ctypes.c_void_p)]
        advapi32.LookupAccountNameW.argtypes = [
            wintypes.LPCWSTR,
            wintypes.LPCWSTR,
            ctypes.c_void_p,
            ctypes.POINTER(dword),
            wintypes.LPWSTR,
            ctypes.POINTER(dword),
            ctypes.POINTER(dword),
        ]
        advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = [
            wintypes.LPCWSTR,
            dword,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_void_p,
        ]
        return advapi32, kernel32

    def _sid_text(sid: int | None) -> str:
        advapi32, kernel32 = _dlls()
        text = ctypes.c_void_p()
        if not advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return str(ctypes.wstring_at(text.value))
        finally:
            kernel32.LocalFree(text)

    def account_sid(account: str) -> str:
        """The SID (``S-1-...``) of a Windows account given by name or SID; ``StartError`` naming it if
        there is no such account."""
        advapi32, kernel32 = _dlls()
        if account.upper().startswith("S-1-"):
            sid = ctypes.c_void_p()
            if not advapi32.ConvertStringSidToSidW(account, ctypes.byref(sid)):
                raise StartError(f"agent.pipe_users: {account!r} is not a valid SID")
            try:
                return _sid_text(sid.value)
            finally:
                kernel32.LocalFree(sid)
        size, domain_size, use = wintypes.DWORD(0), wintypes.DWORD(0), wintypes.DWORD()
        advapi32.LookupAccountNameW(
            None, account, None, ctypes.byref(size), None, ctypes.byref(domain_size), ctypes.byref(use)
        )
        buf = ctypes.create_string_buffer(max(size.value, 1))
        domain = ctypes.create_unicode_buffer(max(domain_size.value, 1))
        if not size.value or not advapi32.LookupAccountNameW(
            None, account, buf, ctypes.byref(size), domain, ctypes.byref(domain_size), ctypes.byref(use)
        ):
            raise StartError(f"agent.pipe_users: no Windows account named {account!r}")
        return _sid_text(ctypes.addressof(buf))

    def current_user_sid() -> str:
        """This process's user, as a SID."""
        advapi32, kernel32 = _dlls()
        token = wintypes.HANDLE()
        if not advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), 0x0008, ctypes.byref(token)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            size = wintypes.DWORD()
            advapi32.GetTokenInformation(token, 1, None, 0, ctypes.byref(size))  # TokenUser
            buf = ctypes.create_string_buffer(size.value)
            if not advapi32.GetTokenInformation(token, 1, buf, size, ctypes.byref(size)):
                raise ctypes.WinError(ctypes.get_last_error())
        finally:
            kernel32.CloseHandle(token)
        return _sid_text(ctypes.cast(buf, ctypes.POINTER(ctypes.c_void_p))[0])  # TOKEN_USER.User.Sid

    def _owner_only(users: list[str]) -> _SecurityAttributes:
        """A security descriptor granting the pipe to this user, SYSTEM and Administrators, and read and
        write to the SIDs ``users``, and to no one else."""
        advapi32, _ = _dlls()
        sddl = f"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{current_user_sid()})"
        sddl += "".join(f"(A;;GRGW;;;{sid})" for sid in users)
        descriptor = ctypes.c_void_p()
        if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl, 1, ctypes.byref(descriptor), None
        ):
            raise ctypes.WinError(ctypes.get_last_error())
        return _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), descriptor.value, False)

    class PipeStream(trio.abc.Stream):
        """One connected pipe instance; it owns the handle (registered with the IOCP once) both ways."""

        def __init__(self, handle: int) -> None:
            self._handle = handle
            self._closed = False
            self._sending = False
            self._receiving = False

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            if self._sending:
                raise trio.BusyResourceError("another task is sending on this pipe")
            self._sending = True
            try:
                view = memoryview(data)
                while view:
                    if self._closed:
                        raise trio.ClosedResourceError("the pipe is closed")
                    try:
                        n = await trio.lowlevel.write_overlapped(self._handle, view)
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"the terminal went away: {exc}") from exc
                    view = view[n:]
                if not data:
                    await trio.lowlevel.checkpoint()
            finally:
                self._sending = False

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            if self._receiving:
                raise trio.BusyResourceError("another task is receiving on this pipe")
            if self._closed:
                raise trio.ClosedResourceError("the pipe is closed")
            self._receiving = True
            try:
                buf = bytearray(max_bytes or _BUFFER)
                try:
                    n = await trio.lowlevel.readinto_overlapped(self._handle, buf)
                except OSError as exc:
                    if getattr(exc, "winerror", None) in _BROKEN:
                        return b""  # the terminal closed its end
                    raise trio.BrokenResourceError(str(exc)) from exc
                return bytes(buf[:n])
            finally:
                self._receiving = False

        async def aclose(self) -> None:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(OSError):
                    _winapi.CloseHandle(self._handle)
            await trio.lowlevel.checkpoint()

    class WinPipeListener:
        """Serves ``\\\\.\\pipe\\NAME``: one instance per terminal, any number of terminals."""

        def __init__(self, name: str, users: list[str] | None = None) -> None:
            self.name = name
            self.users = list(users or [])
            """Accounts (names or SIDs) granted the pipe beside this user, SYSTEM and Administrators."""
            self.path = pipe_path(name)
            self.description = f"pipe:{self.path}"
            self._first: int | None = None
            self._security: _SecurityAttributes | None = None

        def _create(self, *, first: bool) -> int:
            if self._security is None:
                self._security = _owner_only([account_sid(u) for u in self.users])
            open_mode = _winapi.PIPE_ACCESS_DUPLEX | _winapi.FILE_FLAG_OVERLAPPED
            if first:
                open_mode |= _FILE_FLAG_FIRST_PIPE_INSTANCE
            try:
                handle: int = _winapi.CreateNamedPipe(
                    self.path,
                    open_mode,
                    _PIPE_TYPE_BYTE | _PIPE_READMODE_BYTE | _winapi.PIPE_WAIT | _PIPE_REJECT_REMOTE_CLIENTS,
                    _winapi.PIPE_UNLIMITED_INSTANCES,
                    _BUFFER,
                    _BUFFER,
                    0,
                    ctypes.addressof(self._security),
                )
            except OSError as exc:
                if first and getattr(exc, "winerror", None) == _ERROR_ACCESS_DENIED:
                    raise InUse(
                        f"the named pipe {self.path} is in use by another process (agent.pipe_name)"
                    ) from exc
                raise StartError(f"cannot serve the named pipe {self.path}: {exc}") from exc
            trio.lowlevel.register_with_iocp(handle)
            return handle

        def claim(self) -> None:
            """Create the first instance now: a second copier on the same name stops here."""
            if self._first is None:
                self._first = self._create(first=True)

        def release(self) -> None:
            handle, self._first = self._first, None
            if handle is not None:
                _winapi.CloseHandle(handle)

        async def _connected(self, handle: int) -> None:
            """Wait for a terminal to open this instance."""
            ov = _overlapped.Overlapped(0)
            try:
                if ov.ConnectNamedPipe(handle):
                    return  # the terminal was quicker (ERROR_PIPE_CONNECTED): no completion is queued
            except OSError as exc:
                if getattr(exc, "winerror", None) == _ERROR_NO_DATA:
                    return  # it came and went already: its stream reads the end at once
                raise
            await trio.lowlevel.wait_overlapped(handle, ov.address)

        async def serve(
            self, handler: ConnectionHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            self.claim()
            handle, self._first = self._first, None
            assert handle is not None
            try:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    while True:
                        await self._connected(handle)
                        stream, handle = PipeStream(handle), -1
                        nursery.start_soon(handler, stream)
                        handle = self._create(first=False)  # the next terminal's instance
            finally:
                if handle != -1:
                    _winapi.CloseHandle(handle)

    _ERROR_PIPE_BUSY = 231

    async def connect_pipe(name: str, *, patience: float = 5.0) -> PipeStream:
        """What a terminal does: open ``\\\\.\\pipe\\NAME`` (overlapped). While every instance is taken
        (the Agent is creating the next one) it tries again for up to ``patience`` seconds."""
        path = pipe_path(name)
        with trio.move_on_after(patience):
            while True:
                try:
                    handle: int = _winapi.CreateFile(
                        path,
                        _winapi.GENERIC_READ | _winapi.GENERIC_WRITE,
                        0,
                        0,
                        _winapi.OPEN_EXISTING,
                        _winapi.FILE_FLAG_OVERLAPPED,
                        0,
                    )
                except OSError as exc:
                    if getattr(exc, "winerror", None) != _ERROR_PIPE_BUSY:
                        raise
                    await trio.sleep(0.01)
                    continue
                trio.lowlevel.register_with_iocp(handle)
                return PipeStream(handle)
        raise OSError(f"every instance of the named pipe {path} stayed busy for {patience} s")
