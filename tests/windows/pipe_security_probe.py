"""Run by the Windows Python under Wine (``test_named_pipe``): claims the named pipe ``argv[1]`` as the
Agent does (in trio: the pipe joins its I/O completion port) and prints, as JSON, the pipe's DACL (SDDL,
read back from the handle) and this user's SID. ``argv[2]``, if given, is ``agent.pipe_users``; a refusal
is printed as ``{"error": ...}``."""

from __future__ import annotations

import ctypes
import json
import sys
from ctypes import wintypes

import trio

from echo.adapters.locks import StartError
from echo.adapters.pipe.winpipe import WinPipeListener, current_user_sid
from echo.domain.config import AgentConfig

_SE_KERNEL_OBJECT = 6
_DACL_SECURITY_INFORMATION = 4


def dacl_of(handle: int) -> str:
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    p = ctypes.c_void_p
    advapi32.GetSecurityInfo.argtypes = [wintypes.HANDLE, ctypes.c_int, wintypes.DWORD, p, p, p, p]
    advapi32.GetSecurityInfo.argtypes += [ctypes.POINTER(p)]
    convert = advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW
    convert.argtypes = [p, wintypes.DWORD, wintypes.DWORD, ctypes.POINTER(p), p]
    descriptor, text = p(), p()
    err = advapi32.GetSecurityInfo(
        handle,
        _SE_KERNEL_OBJECT,
        _DACL_SECURITY_INFORMATION,
        None,
        None,
        None,
        None,
        ctypes.byref(descriptor),
    )
    if err:
        raise ctypes.WinError(err)
    if not convert(descriptor, 1, _DACL_SECURITY_INFORMATION, ctypes.byref(text), None):
        raise ctypes.WinError(ctypes.get_last_error())
    return ctypes.wstring_at(text.value)


async def main() -> None:
    users = AgentConfig(pipe_users=sys.argv[2] if len(sys.argv) > 2 else "").pipe_user_list()
    listener = WinPipeListener(sys.argv[1], users)
    try:
        listener.claim()
    except StartError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    try:
        assert listener._first is not None
        print(json.dumps({"dacl": dacl_of(listener._first), "user": current_user_sid()}))
    finally:
        listener.release()


if __name__ == "__main__":
    trio.run(main)
