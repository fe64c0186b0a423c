// What every terminal of the shim shares (MT4: mt4_terminal.hpp, MT5: mt5_terminal.hpp): the sandboxed file
// functions, the timer and the event loop (OnInit, OnTimer, OnDeinit, stopped by SIGTERM, Ctrl-C or
// ECHO_STOP_FILE), and the control channel on which a test plays the person at the terminal. Each terminal
// defines its broker (ShimTerminalStart: load the profile and the saved state; ShimTerminalTick: what the
// trade server does between timer events) and its control commands (ShimControlCommand).
#pragma once

#include <signal.h>

#ifdef _WIN32
#include "win32.hpp"
#else
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "mt4.hpp"

// The broker profile (ECHO_BROKER) both terminals read: `symbol NAME DIGITS POINT TICK_SIZE MIN_LOT MAX_LOT
// LOT_STEP STOP_LEVEL CONTRACT TICK_VALUE BID ASK`, `account NUMBER CURRENCY BALANCE LEVERAGE` and `tickets
// FIRST` lines into `t`; a line of any other kind goes to `other(kind, in)`, and is skipped when it says false.
template <class Symbol, class Terminal, class Other>
inline void ShimReadBroker(Terminal &t, Other other) {
    const char *path = std::getenv("ECHO_BROKER");
    if (!path) return;
    std::ifstream in(path);
    std::string kind;
    while (in >> kind) {
        if (kind == "symbol") {
            Symbol s;
            in >> s.name >> s.digits >> s.point >> s.tick_size >> s.min_lot >> s.max_lot >> s.lot_step >>
                s.stop_level >> s.contract >> s.tick_value >> s.bid >> s.ask;
            t.symbols.push_back(s);
        } else if (kind == "account") {
            in >> t.account >> t.currency >> t.balance >> t.leverage;
        } else if (kind == "tickets") {
            in >> t.next_ticket;
        } else if (!other(kind, in)) {
            std::string rest;
            std::getline(in, rest);
        }
    }
}

#define FILE_READ 1
#define FILE_WRITE 2
#define FILE_TXT 16
#define FILE_ANSI 32
#define FILE_SHARE_READ 128
#define INVALID_HANDLE -1

inline long long ShimNowMs() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}
inline long long ShimNowNs() {
    using namespace std::chrono;
    return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}
inline datetime TimeCurrent() { return ShimNowMs() / 1000; }

// ECHO_EVENTS: a file to which the terminal appends one line per trade call (the EA's, or a person's on the
// control channel): "NS EVENT TICKET COMMENT", NS the wall clock in nanoseconds when the call was made,
// EVENT order_send / order_close / order_modify, TICKET the order's (-1: refused), the comment last (it may
// hold spaces); and one per write on the Agent's pipe (MT4): "NS pipe_write BYTES " (-1: failed). What a
// benchmark reads to time a copy from the master's order to the slave's OrderSend.
inline void ShimEvent(long long at_ns, const char *event, long long ticket, const std::string &comment) {
    static FILE *out = [] {
        const char *path = std::getenv("ECHO_EVENTS");
        return path ? std::fopen(path, "a") : nullptr;
    }();
    if (!out) return;
    std::fprintf(out, "%lld %s %lld %s\n", at_ns, event, ticket, comment.c_str());
    std::fflush(out);
}
inline datetime TimeGMT() { return ShimNowMs() / 1000; }

struct ShimLoopState {
    int timer_ms = 0;
    volatile bool stop = false;
};
inline ShimLoopState &ShimLoop() {
    static ShimLoopState s;
    return s;
}
inline void ShimTerminalStart();
inline void ShimTerminalTick();
inline std::string ShimControlCommand(const std::string &line);

// --- files (MQL4/Files sandbox) -----------------------------------------------------------------------
inline std::string ShimFilePath(const string &name) {
    const char *dir = std::getenv("ECHO_FILES");
    return std::string(dir ? dir : ".") + "/" + name.s;
}
inline std::map<int, std::fstream> &ShimFiles() {
    static std::map<int, std::fstream> files;
    return files;
}
inline int FileOpen(const string &name, int flags, short delimiter = '\t', uint codepage = 0) {
    (void)delimiter, (void)codepage;
    static int next = 1;
    std::ios::openmode mode = std::ios::in;
    if (flags & FILE_WRITE) mode = (flags & FILE_READ) ? (std::ios::in | std::ios::out) : (std::ios::out | std::ios::trunc);
    std::fstream f(ShimFilePath(name), mode);
    if (!f.is_open() && (flags & FILE_WRITE) && (flags & FILE_READ)) f.open(ShimFilePath(name), std::ios::out);
    if (!f.is_open()) return INVALID_HANDLE;
    int h = next++;
    ShimFiles()[h] = std::move(f);
    return h;
}
inline void FileClose(int h) { ShimFiles().erase(h); }
inline bool FileSeek(int h, long long offset, int origin) {
    auto &f = ShimFiles()[h];
    f.clear();
    f.seekp(offset, origin == SEEK_END ? std::ios::end : origin == SEEK_CUR ? std::ios::cur : std::ios::beg);
    f.seekg(offset, origin == SEEK_END ? std::ios::end : origin == SEEK_CUR ? std::ios::cur : std::ios::beg);
    return !f.fail();
}
inline uint FileWriteString(int h, const string &s, int length = -1) {
    (void)length;
    ShimFiles()[h] << s.s;
    ShimFiles()[h].flush();
    return static_cast<uint>(s.s.size());
}
inline bool FileIsEnding(int h) { return ShimFiles()[h].peek() == EOF; }
inline string FileReadString(int h, int length = -1) {
    (void)length;
    std::string l;
    std::getline(ShimFiles()[h], l);
    return string(l);
}
inline bool FileIsExist(const string &name, int flag = 0) {
    (void)flag;
    return std::ifstream(ShimFilePath(name)).good();
}
inline bool FileDelete(const string &name, int flag = 0) {
    (void)flag;
    return std::remove(ShimFilePath(name).c_str()) == 0;
}

// --- events -------------------------------------------------------------------------------------------
inline bool EventSetMillisecondTimer(int ms) {
    ShimLoop().timer_ms = ms > 0 ? ms : 1;
    return true;
}
inline void EventKillTimer() { ShimLoop().timer_ms = 0; }
inline void ShimOnSignal(int) { ShimLoop().stop = true; }

int OnInit();
void OnTimer();
void OnDeinit(const int reason);

// --- the control channel (a test playing the person at the terminal) -----------------------------------
struct ShimControl {
    long long listener = -1, client = -1;
    std::string buffer;
    int syncs = 0;  // "sync" requests answered after the next OnTimer
};
inline ShimControl &Control() {
    static ShimControl c;
    return c;
}
// The control channel's sockets: a Unix socket (ECHO_CONTROL) on POSIX, TCP on 127.0.0.1 (ECHO_CONTROL_PORT)
// in the Windows build. Both non-blocking; ShimControlRecv answers > 0 (bytes), 0 (closed) or -1 (nothing yet).
#ifdef _WIN32
inline long long ShimControlListen() {
    const char *port = std::getenv("ECHO_CONTROL_PORT");
    return port ? EchoWinListenLoopback(std::atoi(port)) : -1;
}
inline long long ShimControlAccept(long long listener) { return EchoWinAccept(listener); }
inline int ShimControlRecv(long long c, char *buf, int n) {
    int r = EchoWinRecv(c, buf, n, 0);
    if (r >= 0) return r;
    return EchoWinWsaLastError() == 10035 ? -1 : 0;  // WSAEWOULDBLOCK; any other error ends the connection
}
inline void ShimControlSend(long long c, const std::string &data) {
    EchoWinSend(c, data.data(), static_cast<int>(data.size()), 0);
}
inline void ShimControlClose(long long c) { EchoWinCloseSocket(c); }
#else
inline long long ShimControlListen() {
    const char *path = std::getenv("ECHO_CONTROL");
    if (!path) return -1;
    ::unlink(path);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || ::listen(fd, 1) != 0) {
        ::close(fd);
        return -1;
    }
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}
inline long long ShimControlAccept(long long listener) {
    int c = ::accept(static_cast<int>(listener), nullptr, nullptr);
    if (c >= 0) ::fcntl(c, F_SETFL, O_NONBLOCK);
    return c;
}
inline int ShimControlRecv(long long c, char *buf, int n) {
    ssize_t r = ::recv(static_cast<int>(c), buf, static_cast<size_t>(n), 0);
    if (r >= 0) return static_cast<int>(r);
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : 0;
}
inline void ShimControlSend(long long c, const std::string &data) {
    ::send(static_cast<int>(c), data.data(), data.size(), MSG_NOSIGNAL);
}
inline void ShimControlClose(long long c) { ::close(static_cast<int>(c)); }
#endif
inline void ShimControlOpen() { Control().listener = ShimControlListen(); }
inline void ShimControlPoll() {
    ShimControl &c = Control();
    if (c.listener < 0) return;
    if (c.client < 0) {
        c.client = ShimControlAccept(c.listener);
        if (c.client < 0) return;
    }
    char chunk[4096];
    int n = ShimControlRecv(c.client, chunk, sizeof chunk);
    if (n == 0) {
        ShimControlClose(c.client);
        c.client = -1;
        return;
    }
    if (n < 0) return;
    c.buffer.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = c.buffer.find('\n')) != std::string::npos) {
        std::string command = c.buffer.substr(0, nl);
        c.buffer.erase(0, nl + 1);
        if (command == "sync") {
            c.syncs++;
            continue;
        }
        ShimControlSend(c.client, ShimControlCommand(command) + "\n");
    }
}

// ECHO_STOP_FILE exists: stop as on SIGTERM. Looked for at most every 50 ms, so that a short timer's every tick
// is the EA's work, not the harness's (what bench/bench_ea.py measures the CPU of).
inline bool ShimStopFileExists() {
    static long long next_look = 0;
    long long now = ShimNowMs();
    if (now < next_look) return false;
    next_look = now + 50;
    const char *path = std::getenv("ECHO_STOP_FILE");
    return path && std::ifstream(path).good();
}

// Until the next timer event, `ms` from now. On POSIX the control channel is served as its commands arrive
// meanwhile: a person's order is placed when they click, not on the EA's timer, so the time from an order
// to the EA noticing it is the EA's own (the Windows build serves it on the timer ticks only).
inline void ShimWaitForTick(int ms) {
#ifdef _WIN32
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
#else
    using namespace std::chrono;
    auto due = steady_clock::now() + milliseconds(ms);
    for (;;) {
        auto left = due - steady_clock::now();
        if (left <= nanoseconds(0) || ShimLoop().stop) return;  // SIGTERM interrupts the wait (EINTR)
        ShimControl &c = Control();
        if (c.listener < 0) {
            std::this_thread::sleep_for(left);
            return;
        }
        pollfd fd{static_cast<int>(c.client >= 0 ? c.client : c.listener), POLLIN, 0};
        auto ns = duration_cast<nanoseconds>(left).count();
        timespec wait{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        if (::ppoll(&fd, 1, &wait, nullptr) > 0) ShimControlPoll();
    }
#endif
}

inline int ShimRunEA() {
    ShimTerminalStart();
    ShimControlOpen();
    ::signal(SIGTERM, ShimOnSignal);
    ::signal(SIGINT, ShimOnSignal);
#ifdef _WIN32
    EchoWinOnConsoleStop(&ShimLoop().stop);  // Ctrl-C, Ctrl-Break, the console closed
#endif
    if (OnInit() != INIT_SUCCEEDED) return 1;
    const char *run = std::getenv("ECHO_RUN_MS");
    long long until = run ? ShimNowMs() + std::atoll(run) : 0;
    while (!ShimLoop().stop && (!until || ShimNowMs() < until) && !ShimStopFileExists()) {
        ShimWaitForTick(ShimLoop().timer_ms ? ShimLoop().timer_ms : 50);
#ifdef _WIN32
        ShimControlPoll();  // POSIX: served as its commands arrive, in ShimWaitForTick
#endif
        ShimTerminalTick();
        if (ShimLoop().timer_ms) OnTimer();
        for (; Control().syncs > 0 && Control().client >= 0; Control().syncs--)
            ShimControlSend(Control().client, "ok synced\n");
    }
    OnDeinit(0);
    return 0;
}
