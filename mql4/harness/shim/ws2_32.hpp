// The ws2_32 side of the MT4 shim: the Winsock calls an EA imports from ws2_32.dll, on this machine's
// sockets, so that a compiled EA connects to a real Agent over real TCP. The translator names them
// ws2_32_NAME (their POSIX namesakes would clash) and includes this file when a program imports them.
// In the Windows build (MinGW, _WIN32) they are the real Winsock calls instead (win32.cpp, linked with ws2_32).
#pragma once

#include "mt4.hpp"

#ifdef _WIN32
#include "win32.hpp"

inline int ws2_32_WSAStartup(ushort version, MqlArray<uchar> &data) {
    (void)data;  // the EA's WSADATA buffer: nothing in it is read
    return EchoWinWsaStartup(version);
}
inline int ws2_32_WSAGetLastError() { return EchoWinWsaLastError(); }
inline long long ws2_32_socket(int af, int type, int protocol) { return EchoWinSocket(af, type, protocol); }
inline int ws2_32_connect(long long s, MqlArray<uchar> &address, int length) {
    if (static_cast<int>(address.v.size()) < length) return -1;
    return EchoWinConnect(s, address.v.data(), length);
}
inline int ws2_32_send(long long s, MqlArray<uchar> &buffer, int length, int flags) {
    if (static_cast<int>(buffer.v.size()) < length) return -1;
    return EchoWinSend(s, buffer.v.data(), length, flags);
}
inline int ws2_32_recv(long long s, MqlArray<uchar> &buffer, int length, int flags) {
    if (static_cast<int>(buffer.v.size()) < length) buffer.v.resize(static_cast<size_t>(length));
    return EchoWinRecv(s, buffer.v.data(), length, flags);
}
inline int ws2_32_ioctlsocket(long long s, uint command, uint &argument) {
    return EchoWinIoctlSocket(s, command, &argument);
}
inline int ws2_32_closesocket(long long s) { return EchoWinCloseSocket(s); }

#else
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

// A SOCKET is 64 bits here, as in any 64-bit Windows build. Errors are Winsock's numbers.
#define ECHO_WSAEWOULDBLOCK 10035
inline int &ShimWsaError() {
    static int error = 0;
    return error;
}
inline int ShimWsaFail() {
    ShimWsaError() = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINPROGRESS) ? ECHO_WSAEWOULDBLOCK
                                                                                      : 10000 + errno;
    return -1;
}
inline int ws2_32_WSAStartup(ushort version, MqlArray<uchar> &data) {
    (void)version, (void)data;
    return 0;
}
inline int ws2_32_WSAGetLastError() { return ShimWsaError(); }
inline long long ws2_32_socket(int af, int type, int protocol) {
    // AF_INET, SOCK_STREAM and IPPROTO_TCP have the same numbers in Winsock and Linux
    int fd = ::socket(af, type, protocol);
    return fd < 0 ? static_cast<long long>(ShimWsaFail()) : static_cast<long long>(fd);
}
inline int ws2_32_connect(long long s, MqlArray<uchar> &address, int length) {
    // a Winsock sockaddr_in has Linux's layout on x86 (family as a little-endian 16-bit number first)
    if (static_cast<int>(address.v.size()) < length) return -1;
    if (::connect(static_cast<int>(s), reinterpret_cast<const sockaddr *>(address.v.data()),
                  static_cast<socklen_t>(length)) != 0)
        return ShimWsaFail();
    return 0;
}
inline int ws2_32_send(long long s, MqlArray<uchar> &buffer, int length, int flags) {
    (void)flags;
    ssize_t n = ::send(static_cast<int>(s), buffer.v.data(), static_cast<size_t>(length), MSG_NOSIGNAL);
    return n < 0 ? ShimWsaFail() : static_cast<int>(n);
}
inline int ws2_32_recv(long long s, MqlArray<uchar> &buffer, int length, int flags) {
    (void)flags;
    if (static_cast<int>(buffer.v.size()) < length) buffer.v.resize(static_cast<size_t>(length));
    ssize_t n = ::recv(static_cast<int>(s), buffer.v.data(), static_cast<size_t>(length), 0);
    return n < 0 ? ShimWsaFail() : static_cast<int>(n);
}
inline int ws2_32_ioctlsocket(long long s, uint command, uint &argument) {
    if (command != 0x8004667EU) return -1;  // FIONBIO only
    int fd = static_cast<int>(s);
    int flags = ::fcntl(fd, F_GETFL, 0);
    if (flags < 0) return ShimWsaFail();
    flags = argument ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return ::fcntl(fd, F_SETFL, flags) == 0 ? 0 : ShimWsaFail();
}
inline int ws2_32_closesocket(long long s) { return ::close(static_cast<int>(s)) == 0 ? 0 : ShimWsaFail(); }

#endif
