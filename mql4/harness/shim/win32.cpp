// The operating-system side of the MT4 shim's Windows build: the real kernel32 and ws2_32 calls, in a
// translation unit of their own because <windows.h> clashes with the MT4 runtime's names (see win32.hpp).
// Built and linked with every EA by the MinGW build (mql4/harness/README.md), with -lws2_32.
#include <winsock2.h>
#include <windows.h>

#include <string>

#include "win32.hpp"

namespace {

// Kernel handles carry 32 significant bits on 64-bit Windows (so that 32- and 64-bit processes can share
// them), which is why the 32-bit MT4 terminal can keep them in an int as Pipe.mqh does.
HANDLE ToHandle(int64_t h) { return reinterpret_cast<HANDLE>(static_cast<intptr_t>(h)); }
int64_t FromHandle(HANDLE h) {
    return h == INVALID_HANDLE_VALUE ? -1 : static_cast<int64_t>(reinterpret_cast<intptr_t>(h));
}

std::wstring Wide(const char *utf8) {
    int n = MultiByteToWideChar(CP_UTF8, 0, utf8, -1, nullptr, 0);
    std::wstring out(n > 0 ? static_cast<size_t>(n) : 1, L'\0');
    if (n > 0) MultiByteToWideChar(CP_UTF8, 0, utf8, -1, &out[0], n);
    out.resize(out.size() - 1);  // the terminating NUL
    return out;
}

volatile bool *g_stop_flag = nullptr;
BOOL WINAPI OnConsoleEvent(DWORD event) {
    if (event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT || event == CTRL_CLOSE_EVENT) {
        if (g_stop_flag) *g_stop_flag = true;
        return TRUE;
    }
    return FALSE;
}

}  // namespace

int64_t EchoWinPipeOpen(const char *utf8_path, unsigned access, unsigned share, unsigned disposition,
                        unsigned flags) {
    HANDLE h = CreateFileW(Wide(utf8_path).c_str(), access, share, nullptr, disposition, flags, nullptr);
    return FromHandle(h);
}

bool EchoWinPipeWrite(int64_t handle, const void *bytes, unsigned length, unsigned *written) {
    DWORD done = 0;
    BOOL ok = WriteFile(ToHandle(handle), bytes, length, &done, nullptr);
    *written = done;
    return ok != 0;
}

bool EchoWinPipePeek(int64_t handle, unsigned *available) {
    DWORD n = 0;
    BOOL ok = PeekNamedPipe(ToHandle(handle), nullptr, 0, nullptr, &n, nullptr);
    *available = n;
    return ok != 0;
}

bool EchoWinPipeRead(int64_t handle, void *bytes, unsigned length, unsigned *got) {
    DWORD n = 0;
    BOOL ok = ReadFile(ToHandle(handle), bytes, length, &n, nullptr);
    *got = n;
    return ok != 0;
}

bool EchoWinPipeClose(int64_t handle) { return CloseHandle(ToHandle(handle)) != 0; }

int EchoWinWsaStartup(unsigned short version) {
    WSADATA data;
    return WSAStartup(version, &data);
}

int EchoWinWsaLastError() { return WSAGetLastError(); }

int64_t EchoWinSocket(int af, int type, int protocol) {
    SOCKET s = socket(af, type, protocol);
    return s == INVALID_SOCKET ? -1 : static_cast<int64_t>(s);
}

int EchoWinConnect(int64_t s, const void *address, int length) {
    return connect(static_cast<SOCKET>(s), static_cast<const sockaddr *>(address), length);
}

int EchoWinSend(int64_t s, const void *bytes, int length, int flags) {
    return send(static_cast<SOCKET>(s), static_cast<const char *>(bytes), length, flags);
}

int EchoWinRecv(int64_t s, void *bytes, int length, int flags) {
    return recv(static_cast<SOCKET>(s), static_cast<char *>(bytes), length, flags);
}

int EchoWinIoctlSocket(int64_t s, unsigned command, unsigned *argument) {
    u_long value = *argument;
    int r = ioctlsocket(static_cast<SOCKET>(s), static_cast<long>(command), &value);
    *argument = static_cast<unsigned>(value);
    return r;
}

int EchoWinCloseSocket(int64_t s) { return closesocket(static_cast<SOCKET>(s)); }

int64_t EchoWinListenLoopback(int port) {
    if (EchoWinWsaStartup(0x0202) != 0) return -1;
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET) return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<u_short>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    u_long nonblocking = 1;
    if (bind(s, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || listen(s, 1) != 0 ||
        ioctlsocket(s, FIONBIO, &nonblocking) != 0) {
        closesocket(s);
        return -1;
    }
    return static_cast<int64_t>(s);
}

int64_t EchoWinAccept(int64_t listener) {
    SOCKET c = accept(static_cast<SOCKET>(listener), nullptr, nullptr);
    if (c == INVALID_SOCKET) return -1;
    u_long nonblocking = 1;
    ioctlsocket(c, FIONBIO, &nonblocking);
    return static_cast<int64_t>(c);
}

bool EchoWinReplaceFile(const char *from, const char *to) {
    return MoveFileExW(Wide(from).c_str(), Wide(to).c_str(), MOVEFILE_REPLACE_EXISTING) != 0;
}

void EchoWinOnConsoleStop(volatile bool *flag) {
    g_stop_flag = flag;
    SetConsoleCtrlHandler(OnConsoleEvent, TRUE);
}
