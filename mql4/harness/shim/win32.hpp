// The Windows build of the MT4 shim (MinGW, x86_64-w64-mingw32-g++): what the terminal shim and the ws2_32
// shim need from the operating system, declared without <windows.h>. windows.h defines names the MT4
// runtime also defines (GetTickCount, CreateFileW, ReadFile, ...), so the real calls live in their own
// translation unit, win32.cpp, which includes windows.h and nothing of the shim. Handles cross this
// boundary as 64-bit integers; -1 is "invalid".
#pragma once

#include <cstdint>

// kernel32: a client end of \\.\pipe\NAME (CreateFileW, WriteFile, PeekNamedPipe, ReadFile, CloseHandle)
int64_t EchoWinPipeOpen(const char *utf8_path, unsigned access, unsigned share, unsigned disposition, unsigned flags);
bool EchoWinPipeWrite(int64_t handle, const void *bytes, unsigned length, unsigned *written);
bool EchoWinPipePeek(int64_t handle, unsigned *available);
bool EchoWinPipeRead(int64_t handle, void *bytes, unsigned length, unsigned *got);
bool EchoWinPipeClose(int64_t handle);

// ws2_32: Winsock, with its own error numbers (WSAGetLastError)
int EchoWinWsaStartup(unsigned short version);
int EchoWinWsaLastError();
int64_t EchoWinSocket(int af, int type, int protocol);
int EchoWinConnect(int64_t s, const void *address, int length);
int EchoWinSend(int64_t s, const void *bytes, int length, int flags);
int EchoWinRecv(int64_t s, void *bytes, int length, int flags);
int EchoWinIoctlSocket(int64_t s, unsigned command, unsigned *argument);
int EchoWinCloseSocket(int64_t s);
// a non-blocking listener on 127.0.0.1:port, and a non-blocking accept on it (-1: nobody waiting)
int64_t EchoWinListenLoopback(int port);
int64_t EchoWinAccept(int64_t listener);

// files: replace `to` by `from` in one step (MoveFileExW with MOVEFILE_REPLACE_EXISTING; a plain rename
// refuses an existing target on Windows)
bool EchoWinReplaceFile(const char *from, const char *to);

// Ctrl-C, Ctrl-Break and console close set *flag (SetConsoleCtrlHandler)
void EchoWinOnConsoleStop(volatile bool *flag);
