// The terminal side of the MT4 shim: an in-process broker (symbols, quotes, orders, history), the trade
// and account functions, the sandboxed file functions, the kernel32 pipe calls on the agent's Unix
// socket, and the event loop (OnInit, OnTimer, OnDeinit). Configuration comes from the environment:
//   ECHO_BROKER  a broker profile: lines "symbol NAME DIGITS POINT TICK_SIZE MIN_LOT MAX_LOT LOT_STEP
//                STOP_LEVEL CONTRACT_SIZE TICK_VALUE BID ASK", "account NUMBER CURRENCY BALANCE LEVERAGE",
//                "tickets FIRST" (the first ticket number)
//   ECHO_SOCKET  the Unix socket the named pipe \\.\pipe\NAME stands for
//   ECHO_FILES   the terminal's files folder (MQL4/Files)
//   ECHO_BROKER_STATE  a file where the broker keeps its orders and history: the broker outlives a
//                terminal restart, as a real trade server does
//   ECHO_RUN_MS  stop after this many milliseconds (0: until SIGTERM)
//   ECHO_CONTROL a Unix socket path the shim listens on for a test's orders to this account's broker, as a
//                person would place them in the terminal: "open SYMBOL BUY|SELL LOTS SL TP [MAGIC]",
//                "modify TICKET SL TP", "close TICKET LOTS", "quote SYMBOL BID ASK", "stopout", "orders"; each answered
//                with one line ("ok ..." or "error ..."); "sync" is answered once the EA's next OnTimer ran
//   ECHO_EVENTS  a file where each OrderSend / OrderClose / OrderModify call, and each WriteFile on the pipe,
//                appends a line with its time (terminal_common.hpp, ShimEvent)
//   ECHO_STOP_FILE  a path: once it exists the EA stops as on SIGTERM (OnDeinit, then exit 0); the way a test
//                stops an EA under Wine, where SIGTERM ends a Windows process without OnDeinit (Ctrl-C,
//                which Wine makes of SIGINT, is handled too: SetConsoleCtrlHandler)
// The Windows build (MinGW, _WIN32) calls the real kernel32 pipe functions on \\.\pipe\NAME instead of a
// Unix socket (ECHO_SOCKET is then unused), and its control channel is TCP: ECHO_CONTROL_PORT, a port on
// 127.0.0.1 (ECHO_CONTROL is POSIX only). The operating system calls are in win32.cpp (see win32.hpp).
#pragma once

#include "terminal_common.hpp"

#define OP_BUY 0
#define OP_SELL 1
#define SELECT_BY_POS 0
#define SELECT_BY_TICKET 1
#define MODE_TRADES 0
#define MODE_HISTORY 1
#define MODE_BID 9
#define MODE_ASK 10
#define MODE_POINT 11
#define MODE_DIGITS 12
#define MODE_STOPLEVEL 14
#define MODE_LOTSIZE 15
#define MODE_TICKVALUE 16
#define MODE_TICKSIZE 17
#define MODE_MINLOT 23
#define MODE_LOTSTEP 24
#define MODE_MAXLOT 25
#define INVALID_HANDLE_VALUE -1
#define GENERIC_READ 0x80000000
#define GENERIC_WRITE 0x40000000
#define OPEN_EXISTING 3
#define clrNONE -1
#define ERR_NO_ERROR 0
#define ERR_INVALID_PRICE 129
#define ERR_INVALID_STOPS 130
#define ERR_INVALID_TRADE_VOLUME 131
#define ERR_NOT_ENOUGH_MONEY 134
#define ERR_INVALID_TICKET 4108
#define ERR_UNKNOWN_SYMBOL 4106

struct ShimSymbol {
    std::string name;
    int digits = 5;
    double point = 0.00001, tick_size = 0.00001, min_lot = 0.01, max_lot = 100, lot_step = 0.01;
    int stop_level = 0;
    double contract = 100000, tick_value = 1, bid = 1, ask = 1;
};
struct ShimOrder {
    int ticket = 0, type = 0, magic = 0;
    std::string symbol, comment;
    double lots = 0, open_price = 0, sl = 0, tp = 0, close_price = 0, profit = 0;
    long long open_time = 0, close_time = 0;
};
struct ShimTerminal {
    std::vector<ShimSymbol> symbols;
    std::vector<ShimOrder> open, history;
    int next_ticket = 50000000, last_error = 0, selected_pool = 0, selected = -1;
    long long account = 12345;
    std::string currency = "USD";
    double balance = 10000;
    int leverage = 100;
};
inline ShimTerminal &Shim() {
    static ShimTerminal t;
    return t;
}
inline ShimSymbol *ShimFind(const string &name) {
    for (auto &s : Shim().symbols)
        if (s.name == name.s) return &s;
    return nullptr;
}
inline void ShimLoadBroker() {
    ShimReadBroker<ShimSymbol>(Shim(), [](const std::string &, std::istream &) { return false; });
}

// The broker's orders on disk (ECHO_BROKER_STATE), tab-separated with the comment last.
inline void ShimSaveState() {
    const char *path = std::getenv("ECHO_BROKER_STATE");
    if (!path) return;
    std::string tmp = std::string(path) + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out.precision(17);
        out << "next\t" << Shim().next_ticket << "\n";
        for (int pool : {0, 1})
            for (auto &o : pool ? Shim().history : Shim().open)
                out << (pool ? "hist" : "open") << '\t' << o.ticket << '\t' << o.type << '\t' << o.symbol << '\t'
                    << o.lots << '\t' << o.open_price << '\t' << o.sl << '\t' << o.tp << '\t' << o.magic << '\t'
                    << o.open_time << '\t' << o.close_price << '\t' << o.close_time << '\t' << o.comment << "\n";
    }
#ifdef _WIN32
    EchoWinReplaceFile(tmp.c_str(), path);
#else
    std::rename(tmp.c_str(), path);
#endif
}
inline void ShimLoadState() {
    const char *path = std::getenv("ECHO_BROKER_STATE");
    if (!path) return;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string kind;
        std::getline(f, kind, '\t');
        if (kind == "next") {
            f >> Shim().next_ticket;
            continue;
        }
        ShimOrder o;
        std::string field;
        auto next = [&]() { std::getline(f, field, '\t'); return field; };
        o.ticket = std::stoi(next());
        o.type = std::stoi(next());
        o.symbol = next();
        o.lots = std::stod(next());
        o.open_price = std::stod(next());
        o.sl = std::stod(next());
        o.tp = std::stod(next());
        o.magic = std::stoi(next());
        o.open_time = std::stoll(next());
        o.close_price = std::stod(next());
        o.close_time = std::stoll(next());
        std::getline(f, o.comment);
        (kind == "hist" ? Shim().history : Shim().open).push_back(o);
    }
}

// --- market and account ---------------------------------------------------------------------------------
inline double MarketInfo(const string &symbol, int mode) {
    ShimSymbol *s = ShimFind(symbol);
    if (!s) {
        Shim().last_error = ERR_UNKNOWN_SYMBOL;
        return 0;
    }
    switch (mode) {
        case MODE_BID: return s->bid;
        case MODE_ASK: return s->ask;
        case MODE_POINT: return s->point;
        case MODE_DIGITS: return s->digits;
        case MODE_STOPLEVEL: return s->stop_level;
        case MODE_LOTSIZE: return s->contract;
        case MODE_TICKVALUE: return s->tick_value;
        case MODE_TICKSIZE: return s->tick_size;
        case MODE_MINLOT: return s->min_lot;
        case MODE_LOTSTEP: return s->lot_step;
        case MODE_MAXLOT: return s->max_lot;
    }
    return 0;
}
inline int SymbolsTotal(bool selected) {
    (void)selected;
    return static_cast<int>(Shim().symbols.size());
}
inline string SymbolName(int i, bool selected) {
    (void)selected;
    return string(Shim().symbols.at(static_cast<size_t>(i)).name);
}
inline bool RefreshRates() { return true; }
inline int GetLastError() {
    int e = Shim().last_error;
    Shim().last_error = 0;
    return e;
}
inline long long AccountNumber() { return Shim().account; }
inline string AccountCurrency() { return string(Shim().currency); }
inline int AccountLeverage() { return Shim().leverage; }
inline double AccountBalance() { return Shim().balance; }
inline double AccountEquity() { return Shim().balance; }
inline double AccountMargin() { return 0; }
inline double AccountFreeMargin() { return Shim().balance; }

// --- orders -----------------------------------------------------------------------------------------------
inline bool ShimStopsOk(const ShimSymbol &s, int type, double sl, double tp) {
    double ref = type == OP_BUY ? s.bid : s.ask, min = s.stop_level * s.point;
    if (sl > 0 && (type == OP_BUY ? ref - sl : sl - ref) < min - s.point / 2) return false;
    if (tp > 0 && (type == OP_BUY ? tp - ref : ref - tp) < min - s.point / 2) return false;
    return true;
}
inline bool ShimLotsOk(const ShimSymbol &s, double lots) {
    double steps = lots / s.lot_step;
    return lots >= s.min_lot - 1e-9 && lots <= s.max_lot + 1e-9 && std::fabs(steps - std::round(steps)) < 1e-6;
}
inline int ShimOrderSend(const string &symbol, int cmd, double volume, double price, int slippage, double sl,
                         double tp, const string &comment, int magic, datetime expiration, color arrow) {
    (void)price, (void)slippage, (void)expiration, (void)arrow;
    ShimSymbol *s = ShimFind(symbol);
    if (!s) return Shim().last_error = ERR_UNKNOWN_SYMBOL, -1;
    if (s->bid <= 0 || s->ask <= 0) return Shim().last_error = 136, -1;  // ERR_OFF_QUOTES: no prices
    if (!ShimLotsOk(*s, volume)) return Shim().last_error = ERR_INVALID_TRADE_VOLUME, -1;
    if (!ShimStopsOk(*s, cmd, sl, tp)) return Shim().last_error = ERR_INVALID_STOPS, -1;
    ShimOrder o;
    o.ticket = Shim().next_ticket++;
    o.type = cmd;
    o.symbol = symbol.s;
    o.lots = volume;
    o.open_price = cmd == OP_BUY ? s->ask : s->bid;
    o.sl = sl;
    o.tp = tp;
    o.magic = magic;
    o.comment = comment.s.substr(0, 31);
    o.open_time = TimeCurrent();
    Shim().open.push_back(o);
    ShimSaveState();
    return o.ticket;
}
inline std::vector<ShimOrder> &ShimPool(int pool) { return pool == MODE_HISTORY ? Shim().history : Shim().open; }
inline bool OrderSelect(int index, int select, int pool = MODE_TRADES) {
    ShimTerminal &t = Shim();
    if (select == SELECT_BY_POS) {
        if (index < 0 || index >= static_cast<int>(ShimPool(pool).size())) return false;
        t.selected_pool = pool;
        t.selected = index;
        return true;
    }
    for (int p : {MODE_TRADES, MODE_HISTORY}) {
        auto &v = ShimPool(p);
        for (size_t i = 0; i < v.size(); i++)
            if (v[i].ticket == index) {
                t.selected_pool = p;
                t.selected = static_cast<int>(i);
                return true;
            }
    }
    return false;
}
inline ShimOrder &ShimSelected() { return ShimPool(Shim().selected_pool).at(static_cast<size_t>(Shim().selected)); }
inline int OrdersTotal() { return static_cast<int>(Shim().open.size()); }
inline int OrdersHistoryTotal() { return static_cast<int>(Shim().history.size()); }
inline int OrderTicket() { return ShimSelected().ticket; }
inline int OrderType() { return ShimSelected().type; }
inline int OrderMagicNumber() { return ShimSelected().magic; }
inline string OrderSymbol() { return string(ShimSelected().symbol); }
inline string OrderComment() { return string(ShimSelected().comment); }
inline double OrderLots() { return ShimSelected().lots; }
inline double OrderOpenPrice() { return ShimSelected().open_price; }
inline double OrderStopLoss() { return ShimSelected().sl; }
inline double OrderTakeProfit() { return ShimSelected().tp; }
inline double OrderClosePrice() { return ShimSelected().close_price; }
inline double OrderProfit() { return ShimSelected().profit; }
inline datetime OrderOpenTime() { return ShimSelected().open_time; }
inline datetime OrderCloseTime() { return ShimSelected().close_time; }
inline bool ShimOrderClose(int ticket, double lots, double price, int slippage, color arrow) {
    (void)price, (void)slippage, (void)arrow;
    auto &open = Shim().open;
    for (size_t i = 0; i < open.size(); i++) {
        if (open[i].ticket != ticket) continue;
        ShimOrder o = open[i];
        ShimSymbol *s = ShimFind(string(o.symbol));
        bool full = lots >= o.lots - 1e-9;
        double remaining = full ? 0 : o.lots - lots;
        if (!full && (!ShimLotsOk(*s, lots) || !ShimLotsOk(*s, remaining)))
            return Shim().last_error = ERR_INVALID_TRADE_VOLUME, false;
        open.erase(open.begin() + static_cast<long>(i));
        if (!full) {
            ShimOrder rest = o;
            rest.ticket = Shim().next_ticket++;
            rest.lots = NormalizeDouble(remaining, 8);
            rest.comment = "from #" + std::to_string(o.ticket);
            open.push_back(rest);
            o.lots = lots;
        }
        o.close_price = o.type == OP_BUY ? s->bid : s->ask;
        o.close_time = TimeCurrent();
        Shim().history.push_back(o);
        ShimSaveState();
        return true;
    }
    Shim().last_error = ERR_INVALID_TICKET;
    return false;
}
inline bool ShimOrderModify(int ticket, double price, double sl, double tp, datetime expiration, color arrow) {
    (void)price, (void)expiration, (void)arrow;
    for (auto &o : Shim().open) {
        if (o.ticket != ticket) continue;
        if (!ShimStopsOk(*ShimFind(string(o.symbol)), o.type, sl, tp)) return Shim().last_error = ERR_INVALID_STOPS, false;
        o.sl = sl;
        o.tp = tp;
        ShimSaveState();
        return true;
    }
    Shim().last_error = ERR_INVALID_TICKET;
    return false;
}

// The trade calls, each noted in ECHO_EVENTS (when set) with the time it was made.
inline int OrderSend(const string &symbol, int cmd, double volume, double price, int slippage, double sl,
                     double tp, const string &comment, int magic, datetime expiration, color arrow) {
    long long at = ShimNowNs();
    int ticket = ShimOrderSend(symbol, cmd, volume, price, slippage, sl, tp, comment, magic, expiration, arrow);
    ShimEvent(at, "order_send", ticket, comment.s);
    return ticket;
}
inline bool OrderClose(int ticket, double lots, double price, int slippage, color arrow = clrNONE) {
    long long at = ShimNowNs();
    bool done = ShimOrderClose(ticket, lots, price, slippage, arrow);
    ShimEvent(at, "order_close", done ? ticket : -1, "");
    return done;
}
inline bool OrderModify(int ticket, double price, double sl, double tp, datetime expiration, color arrow = clrNONE) {
    long long at = ShimNowNs();
    bool done = ShimOrderModify(ticket, price, sl, tp, expiration, arrow);
    ShimEvent(at, "order_modify", done ? ticket : -1, "");
    return done;
}

// The trade server's own closes: stops reached by the price (comment gets "[sl]" / "[tp]", as MT4 shows
// it), and a stop-out (the comment becomes "so: ...").
inline void ShimCloseByServer(size_t i, double price, const std::string &comment) {
    ShimOrder o = Shim().open[i];
    Shim().open.erase(Shim().open.begin() + static_cast<long>(i));
    o.close_price = price;
    o.close_time = TimeCurrent();
    o.comment = comment.substr(0, 31);
    Shim().history.push_back(o);
}
inline void ShimTriggerStops() {
    bool changed = false;
    for (size_t i = 0; i < Shim().open.size();) {
        ShimOrder &o = Shim().open[i];
        ShimSymbol *s = ShimFind(string(o.symbol));
        bool buy = o.type == OP_BUY;
        double ref = s == nullptr ? 0 : (buy ? s->bid : s->ask);
        if (s && ref > 0 && o.sl > 0 && (buy ? ref <= o.sl : ref >= o.sl)) {
            ShimCloseByServer(i, o.sl, o.comment + "[sl]");
            changed = true;
        } else if (s && ref > 0 && o.tp > 0 && (buy ? ref >= o.tp : ref <= o.tp)) {
            ShimCloseByServer(i, o.tp, o.comment + "[tp]");
            changed = true;
        } else {
            i++;
        }
    }
    if (changed) ShimSaveState();
}
inline void ShimStopOut() {
    while (!Shim().open.empty()) {
        ShimOrder &o = Shim().open[0];
        ShimSymbol *s = ShimFind(string(o.symbol));
        ShimCloseByServer(0, o.type == OP_BUY ? s->bid : s->ask, "so: 12.5%/100.0/800.0");
    }
    ShimSaveState();
}

#ifdef _WIN32
// --- kernel32 named pipe calls: the real ones (win32.cpp) -----------------------------------------------
// Pipe.mqh keeps handles in an int, as the 32-bit MT4 terminal does; kernel handles fit (see win32.cpp).
inline int CreateFileW(const string &name, uint access, uint share, int security, uint disposition, uint flags,
                       int templ) {
    (void)security, (void)templ;
    return static_cast<int>(EchoWinPipeOpen(name.s.c_str(), access, share, disposition, flags));
}
inline bool WriteFile(int h, MqlArray<uchar> &buf, uint n, uint &written, int overlapped) {
    (void)overlapped;
    if (buf.v.size() < n) return false;
    long long at = ShimNowNs();
    bool done = EchoWinPipeWrite(h, buf.v.data(), n, &written);
    ShimEvent(at, "pipe_write", done ? static_cast<long long>(n) : -1LL, "");
    return done;
}
inline bool PeekNamedPipe(int h, int buf, uint size, int read, uint &available, int left) {
    (void)buf, (void)size, (void)read, (void)left;
    return EchoWinPipePeek(h, &available);
}
inline bool ReadFile(int h, MqlArray<uchar> &buf, uint n, uint &read, int overlapped) {
    (void)overlapped;
    if (buf.v.size() < n) buf.v.resize(n);
    return EchoWinPipeRead(h, buf.v.data(), n, &read);
}
inline bool CloseHandle(int h) { return EchoWinPipeClose(h); }

#else
// --- kernel32 named pipe calls, on the agent's Unix socket --------------------------------------------
inline int CreateFileW(const string &name, uint access, uint share, int security, uint disposition, uint flags,
                       int templ) {
    (void)name, (void)access, (void)share, (void)security, (void)disposition, (void)flags, (void)templ;
    const char *path = std::getenv("ECHO_SOCKET");
    if (!path) return INVALID_HANDLE_VALUE;
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return INVALID_HANDLE_VALUE;
    }
    return fd;
}
inline bool WriteFile(int h, MqlArray<uchar> &buf, uint n, uint &written, int overlapped) {
    (void)overlapped;
    long long at = ShimNowNs();
    size_t done = 0;
    while (done < n) {
        ssize_t w = ::send(h, buf.v.data() + done, n - done, MSG_NOSIGNAL);
        if (w <= 0) return ShimEvent(at, "pipe_write", -1, ""), false;
        done += static_cast<size_t>(w);
    }
    written = n;
    ShimEvent(at, "pipe_write", n, "");
    return true;
}
inline bool PeekNamedPipe(int h, int buf, uint size, int read, uint &available, int left) {
    (void)buf, (void)size, (void)read, (void)left;
    int n = 0;
    if (::ioctl(h, FIONREAD, &n) != 0) return false;
    if (n == 0) {  // nothing to read: still connected, or closed by the other side?
        char c;
        ssize_t r = ::recv(h, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0) return false;
    }
    available = static_cast<uint>(n);
    return true;
}
inline bool ReadFile(int h, MqlArray<uchar> &buf, uint n, uint &read, int overlapped) {
    (void)overlapped;
    if (buf.v.size() < n) buf.v.resize(n);
    ssize_t r = ::recv(h, buf.v.data(), n, 0);
    if (r <= 0) return false;
    read = static_cast<uint>(r);
    return true;
}
inline bool CloseHandle(int h) { return ::close(h) == 0; }
#endif

inline std::string ShimControlCommand(const std::string &line) {
    std::istringstream in(line);
    std::string verb;
    in >> verb;
    char buf[64];
    if (verb == "open") {
        std::string sym, side;
        double lots, sl, tp;
        int magic = 0;
        in >> sym >> side >> lots >> sl >> tp;
        in >> magic;  // optional
        int type = side == "SELL" ? OP_SELL : OP_BUY;
        int t = OrderSend(string(sym), type, lots, 0, 0, sl, tp, string(""), magic, 0, clrNONE);
        return t < 0 ? "error " + std::to_string(GetLastError()) : "ok " + std::to_string(t);
    }
    if (verb == "modify") {
        int ticket;
        double sl, tp;
        in >> ticket >> sl >> tp;
        return OrderModify(ticket, 0, sl, tp, 0) ? "ok" : "error " + std::to_string(GetLastError());
    }
    if (verb == "close") {
        int ticket;
        double lots;
        in >> ticket >> lots;
        if (!OrderClose(ticket, lots, 0, 0)) return "error " + std::to_string(GetLastError());
        for (auto &o : Shim().open)
            if (o.comment == "from #" + std::to_string(ticket)) return "ok " + std::to_string(o.ticket);
        return "ok 0";
    }
    if (verb == "quote") {
        std::string sym;
        double bid, ask;
        in >> sym >> bid >> ask;
        ShimSymbol *s = ShimFind(string(sym));
        if (!s) return "error 4106";
        s->bid = bid;
        s->ask = ask;
        return "ok";
    }
    if (verb == "stopout") {
        ShimStopOut();
        return "ok";
    }
    if (verb == "orders") {
        std::string out = "ok";
        for (auto &o : Shim().open) {
            std::snprintf(buf, sizeof buf, " %d:%s:%.2f", o.ticket, o.symbol.c_str(), o.lots);
            out += buf;
        }
        return out;
    }
    return "error unknown command";
}
// What the common event loop asks of this terminal.
inline void ShimTerminalStart() {
    ShimLoadBroker();
    ShimLoadState();
}
inline void ShimTerminalTick() { ShimTriggerStops(); }
