// The terminal side of the MT5 shim: an in-process MT5 trade server for a hedging account (symbols with
// their filling modes, positions that keep their ticket through partial closes, orders and deals, the
// deals history with each deal's reason, TRADE_RETCODE_* answers), the account and symbol functions, MQL5's
// native sockets (SocketCreate ... SocketClose) on real TCP sockets with the terminal's allowed-hosts rule,
// and the common event loop, files and control channel (terminal_common.hpp). POSIX only: the MT5 EAs have
// no Windows (MinGW) build in the harness. Configuration, besides terminal_common.hpp's:
//   ECHO_BROKER  the profile of mt4_terminal.hpp ("symbol ...", "account ...", "tickets FIRST") and
//                "filling SYMBOL MASK" (SYMBOL_FILLING_MODE: 1 FOK, 2 IOC, 0 neither: market execution then
//                refuses both and takes RETURN), "margin_mode hedging|netting", "company NAME"
//   ECHO_ALLOWED_HOSTS  the terminal's list of hosts an EA may reach (Tools > Options > Expert Advisors),
//                comma-separated; SocketConnect to any other host fails with ERR_FUNCTION_NOT_ALLOWED (4014)
//   ECHO_BROKER_STATE  positions ("open" / "hist" lines in the MT4 shim's layout, the initial volume last)
//                and deals ("deal" lines), so that they outlive a terminal restart
// Control commands: "quote SYMBOL BID ASK", "stopout", "orders" (the open positions), "open SYMBOL BUY|SELL
// LOTS SL TP [MAGIC]", "close TICKET LOTS", "modify TICKET SL TP" (as a person at the terminal: reason CLIENT).
// Not modelled (refused or absent): netting accounts' trading (OrderSend answers TRADE_RETCODE_ERROR),
// pending orders, OrderSendAsync, margin and profit, freeze levels, requotes, CTrade and the Standard Library.
#pragma once

#include "terminal_common.hpp"

#ifdef _WIN32
#error "the MT5 shim is POSIX only"
#endif

#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>

#define ERR_FUNCTION_NOT_ALLOWED 4014
#define ERR_NETSOCKET_INVALIDHANDLE 5270
#define ERR_NETSOCKET_CANNOT_CONNECT 5272
#define ERR_NETSOCKET_IO_ERROR 5273
#define CP_UTF8 65001

enum ENUM_SYMBOL_INFO_DOUBLE {
    SYMBOL_BID = 1, SYMBOL_ASK, SYMBOL_POINT, SYMBOL_TRADE_TICK_VALUE, SYMBOL_TRADE_TICK_SIZE,
    SYMBOL_TRADE_CONTRACT_SIZE, SYMBOL_VOLUME_MIN, SYMBOL_VOLUME_MAX, SYMBOL_VOLUME_STEP
};
enum ENUM_SYMBOL_INFO_INTEGER { SYMBOL_DIGITS = 100, SYMBOL_TRADE_STOPS_LEVEL, SYMBOL_FILLING_MODE };
#define SYMBOL_FILLING_FOK 1
#define SYMBOL_FILLING_IOC 2
enum ENUM_ACCOUNT_INFO_INTEGER { ACCOUNT_LOGIN = 200, ACCOUNT_LEVERAGE, ACCOUNT_MARGIN_MODE };
enum ENUM_ACCOUNT_INFO_DOUBLE { ACCOUNT_BALANCE = 300, ACCOUNT_EQUITY, ACCOUNT_MARGIN, ACCOUNT_MARGIN_FREE };
enum ENUM_ACCOUNT_INFO_STRING { ACCOUNT_CURRENCY = 400, ACCOUNT_COMPANY };
enum ENUM_ACCOUNT_MARGIN_MODE {
    ACCOUNT_MARGIN_MODE_RETAIL_NETTING = 0, ACCOUNT_MARGIN_MODE_EXCHANGE = 1, ACCOUNT_MARGIN_MODE_RETAIL_HEDGING = 2
};
enum ENUM_POSITION_PROPERTY_INTEGER {
    POSITION_TICKET = 500, POSITION_TYPE, POSITION_MAGIC, POSITION_TIME_MSC, POSITION_IDENTIFIER
};
enum ENUM_POSITION_PROPERTY_DOUBLE { POSITION_VOLUME = 600, POSITION_PRICE_OPEN, POSITION_SL, POSITION_TP, POSITION_PROFIT };
enum ENUM_POSITION_PROPERTY_STRING { POSITION_SYMBOL = 700, POSITION_COMMENT };
enum ENUM_POSITION_TYPE { POSITION_TYPE_BUY = 0, POSITION_TYPE_SELL = 1 };
enum ENUM_DEAL_PROPERTY_INTEGER {
    DEAL_ENTRY = 800, DEAL_REASON, DEAL_POSITION_ID, DEAL_TIME_MSC, DEAL_MAGIC, DEAL_TYPE
};
enum ENUM_DEAL_PROPERTY_DOUBLE { DEAL_VOLUME = 900, DEAL_PRICE };
enum ENUM_DEAL_PROPERTY_STRING { DEAL_SYMBOL = 1000, DEAL_COMMENT };
enum ENUM_DEAL_ENTRY { DEAL_ENTRY_IN = 0, DEAL_ENTRY_OUT = 1, DEAL_ENTRY_INOUT = 2, DEAL_ENTRY_OUT_BY = 3 };
enum ENUM_DEAL_REASON {
    DEAL_REASON_CLIENT = 0, DEAL_REASON_MOBILE, DEAL_REASON_WEB, DEAL_REASON_EXPERT, DEAL_REASON_SL, DEAL_REASON_TP,
    DEAL_REASON_SO
};
enum ENUM_ORDER_TYPE { ORDER_TYPE_BUY = 0, ORDER_TYPE_SELL = 1 };
enum ENUM_ORDER_TYPE_FILLING { ORDER_FILLING_FOK = 0, ORDER_FILLING_IOC = 1, ORDER_FILLING_RETURN = 2 };
enum ENUM_TRADE_REQUEST_ACTIONS { TRADE_ACTION_DEAL = 1, TRADE_ACTION_PENDING = 5, TRADE_ACTION_SLTP = 6 };

// The trade server's return codes (MQL5 reference, "Trade Server Return Codes").
#define TRADE_RETCODE_REQUOTE 10004
#define TRADE_RETCODE_REJECT 10006
#define TRADE_RETCODE_CANCEL 10007
#define TRADE_RETCODE_PLACED 10008
#define TRADE_RETCODE_DONE 10009
#define TRADE_RETCODE_DONE_PARTIAL 10010
#define TRADE_RETCODE_ERROR 10011
#define TRADE_RETCODE_TIMEOUT 10012
#define TRADE_RETCODE_INVALID 10013
#define TRADE_RETCODE_INVALID_VOLUME 10014
#define TRADE_RETCODE_INVALID_PRICE 10015
#define TRADE_RETCODE_INVALID_STOPS 10016
#define TRADE_RETCODE_TRADE_DISABLED 10017
#define TRADE_RETCODE_MARKET_CLOSED 10018
#define TRADE_RETCODE_NO_MONEY 10019
#define TRADE_RETCODE_PRICE_CHANGED 10020
#define TRADE_RETCODE_PRICE_OFF 10021
#define TRADE_RETCODE_INVALID_EXPIRATION 10022
#define TRADE_RETCODE_ORDER_CHANGED 10023
#define TRADE_RETCODE_TOO_MANY_REQUESTS 10024
#define TRADE_RETCODE_NO_CHANGES 10025
#define TRADE_RETCODE_SERVER_DISABLES_AT 10026
#define TRADE_RETCODE_CLIENT_DISABLES_AT 10027
#define TRADE_RETCODE_LOCKED 10028
#define TRADE_RETCODE_FROZEN 10029
#define TRADE_RETCODE_INVALID_FILL 10030
#define TRADE_RETCODE_CONNECTION 10031
#define TRADE_RETCODE_ONLY_REAL 10032
#define TRADE_RETCODE_LIMIT_ORDERS 10033
#define TRADE_RETCODE_LIMIT_VOLUME 10034
#define TRADE_RETCODE_INVALID_ORDER 10035
#define TRADE_RETCODE_POSITION_CLOSED 10036
#define TRADE_RETCODE_INVALID_CLOSE_VOLUME 10038
#define TRADE_RETCODE_CLOSE_ORDER_EXIST 10039
#define TRADE_RETCODE_LIMIT_POSITIONS 10040
#define TRADE_RETCODE_REJECT_CANCEL 10041
#define TRADE_RETCODE_LONG_ONLY 10042
#define TRADE_RETCODE_SHORT_ONLY 10043
#define TRADE_RETCODE_CLOSE_ONLY 10044
#define TRADE_RETCODE_FIFO_CLOSE 10045
#define TRADE_RETCODE_HEDGE_PROHIBITED 10046

struct MqlTradeRequest {
    ENUM_TRADE_REQUEST_ACTIONS action = TRADE_ACTION_DEAL;
    uint64_t magic = 0, order = 0;
    string symbol;
    double volume = 0, price = 0, stoplimit = 0, sl = 0, tp = 0;
    uint64_t deviation = 0;
    ENUM_ORDER_TYPE type = ORDER_TYPE_BUY;
    ENUM_ORDER_TYPE_FILLING type_filling = ORDER_FILLING_FOK;
    datetime expiration = 0;
    string comment;
    uint64_t position = 0, position_by = 0;
};
struct MqlTradeResult {
    uint retcode = 0;
    uint64_t deal = 0, order = 0;
    double volume = 0, price = 0, bid = 0, ask = 0;
    string comment;
    uint request_id = 0, retcode_external = 0;
};
template <typename T> void ZeroMemory(T &value) { value = T(); }

struct Shim5Symbol {
    std::string name;
    int digits = 5, stop_level = 0, filling = SYMBOL_FILLING_FOK;
    double point = 0.00001, tick_size = 0.00001, min_lot = 0.01, max_lot = 100, lot_step = 0.01;
    double contract = 100000, tick_value = 1, bid = 1, ask = 1;
};
struct Shim5Position {
    uint64_t ticket = 0;
    int type = 0;
    std::string symbol, comment;
    double volume = 0, initial = 0, open_price = 0, sl = 0, tp = 0, close_price = 0;
    uint64_t magic = 0;
    long long open_ms = 0, close_ms = 0;
};
struct Shim5Deal {
    uint64_t ticket = 0, position = 0, magic = 0;
    int entry = 0, reason = 0, type = 0;
    std::string symbol, comment;
    double volume = 0, price = 0;
    long long time_ms = 0;
};
struct Shim5Terminal {
    std::vector<Shim5Symbol> symbols;
    std::vector<Shim5Position> open, closed;
    std::vector<Shim5Deal> deals;
    std::vector<size_t> history;  // the deals HistorySelect chose (indexes into deals)
    uint64_t next_ticket = 50000000;
    int last_error = 0, selected = -1;
    long long account = 12345;
    bool hedging = true;
    std::string currency = "USD", company = "Echo Test Broker";
    double balance = 10000;
    int leverage = 100;
};
inline Shim5Terminal &Shim5() {
    static Shim5Terminal t;
    return t;
}
inline Shim5Symbol *Shim5Find(const std::string &name) {
    for (auto &s : Shim5().symbols)
        if (s.name == name) return &s;
    return nullptr;
}

inline void ShimLoadBroker() {
    // MT5's own lines: `filling SYMBOL MASK`, `margin_mode hedging|netting`, `company NAME...`
    ShimReadBroker<Shim5Symbol>(Shim5(), [](const std::string &kind, std::istream &in) {
        if (kind == "filling") {
            std::string name;
            int mask = 0;
            in >> name >> mask;
            if (Shim5Symbol *s = Shim5Find(name)) s->filling = mask;
        } else if (kind == "margin_mode") {
            std::string mode;
            in >> mode;
            Shim5().hedging = mode != "netting";
        } else if (kind == "company") {
            std::getline(in >> std::ws, Shim5().company);
        } else {
            return false;
        }
        return true;
    });
}

inline void ShimSaveState() {
    const char *path = std::getenv("ECHO_BROKER_STATE");
    if (!path) return;
    std::string tmp = std::string(path) + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out.precision(17);
        out << "next\t" << Shim5().next_ticket << "\n";
        for (int pool : {0, 1})
            for (auto &p : pool ? Shim5().closed : Shim5().open)
                out << (pool ? "hist" : "open") << '\t' << p.ticket << '\t' << p.type << '\t' << p.symbol << '\t'
                    << (pool ? p.initial : p.volume) << '\t' << p.open_price << '\t' << p.sl << '\t' << p.tp << '\t'
                    << p.magic << '\t' << p.open_ms << '\t' << p.close_price << '\t' << p.close_ms << '\t' << p.comment
                    << '\t' << p.initial << "\n";
        for (auto &d : Shim5().deals)
            out << "deal\t" << d.ticket << '\t' << d.position << '\t' << d.entry << '\t' << d.reason << '\t' << d.type
                << '\t' << d.symbol << '\t' << d.volume << '\t' << d.price << '\t' << d.magic << '\t' << d.time_ms << '\t'
                << d.comment << "\n";
    }
    std::rename(tmp.c_str(), path);
}
inline void ShimLoadState() {
    const char *path = std::getenv("ECHO_BROKER_STATE");
    if (!path) return;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string kind, field;
        std::getline(f, kind, '\t');
        auto next = [&]() { std::getline(f, field, '\t'); return field; };
        if (kind == "next") {
            Shim5().next_ticket = std::stoull(next());
        } else if (kind == "open" || kind == "hist") {
            Shim5Position p;
            p.ticket = std::stoull(next());
            p.type = std::stoi(next());
            p.symbol = next();
            p.volume = std::stod(next());
            p.open_price = std::stod(next());
            p.sl = std::stod(next());
            p.tp = std::stod(next());
            p.magic = std::stoull(next());
            p.open_ms = std::stoll(next());
            p.close_price = std::stod(next());
            p.close_ms = std::stoll(next());
            p.comment = next();
            p.initial = std::stod(next());
            if (kind == "hist") p.volume = 0;
            (kind == "hist" ? Shim5().closed : Shim5().open).push_back(p);
        } else if (kind == "deal") {
            Shim5Deal d;
            d.ticket = std::stoull(next());
            d.position = std::stoull(next());
            d.entry = std::stoi(next());
            d.reason = std::stoi(next());
            d.type = std::stoi(next());
            d.symbol = next();
            d.volume = std::stod(next());
            d.price = std::stod(next());
            d.magic = std::stoull(next());
            d.time_ms = std::stoll(next());
            std::getline(f, d.comment);
            Shim5().deals.push_back(d);
        }
    }
}

// --- errors, symbols, account --------------------------------------------------------------------------
inline int GetLastError() { return Shim5().last_error; }
inline void ResetLastError() { Shim5().last_error = 0; }
inline int SymbolsTotal(bool selected) {
    (void)selected;
    return static_cast<int>(Shim5().symbols.size());
}
inline string SymbolName(int i, bool selected) {
    (void)selected;
    return string(Shim5().symbols.at(static_cast<size_t>(i)).name);
}
inline double SymbolInfoDouble(const string &symbol, ENUM_SYMBOL_INFO_DOUBLE prop) {
    Shim5Symbol *s = Shim5Find(symbol.s);
    if (!s) return Shim5().last_error = 4301, 0;  // ERR_MARKET_UNKNOWN_SYMBOL
    switch (prop) {
        case SYMBOL_BID: return s->bid;
        case SYMBOL_ASK: return s->ask;
        case SYMBOL_POINT: return s->point;
        case SYMBOL_TRADE_TICK_VALUE: return s->tick_value;
        case SYMBOL_TRADE_TICK_SIZE: return s->tick_size;
        case SYMBOL_TRADE_CONTRACT_SIZE: return s->contract;
        case SYMBOL_VOLUME_MIN: return s->min_lot;
        case SYMBOL_VOLUME_MAX: return s->max_lot;
        case SYMBOL_VOLUME_STEP: return s->lot_step;
    }
    return 0;
}
inline long long SymbolInfoInteger(const string &symbol, ENUM_SYMBOL_INFO_INTEGER prop) {
    Shim5Symbol *s = Shim5Find(symbol.s);
    if (!s) return Shim5().last_error = 4301, 0;
    switch (prop) {
        case SYMBOL_DIGITS: return s->digits;
        case SYMBOL_TRADE_STOPS_LEVEL: return s->stop_level;
        case SYMBOL_FILLING_MODE: return s->filling;
    }
    return 0;
}
inline long long AccountInfoInteger(ENUM_ACCOUNT_INFO_INTEGER prop) {
    switch (prop) {
        case ACCOUNT_LOGIN: return Shim5().account;
        case ACCOUNT_LEVERAGE: return Shim5().leverage;
        case ACCOUNT_MARGIN_MODE:
            return Shim5().hedging ? ACCOUNT_MARGIN_MODE_RETAIL_HEDGING : ACCOUNT_MARGIN_MODE_RETAIL_NETTING;
    }
    return 0;
}
inline double AccountInfoDouble(ENUM_ACCOUNT_INFO_DOUBLE prop) {
    switch (prop) {
        case ACCOUNT_BALANCE:
        case ACCOUNT_EQUITY:
        case ACCOUNT_MARGIN_FREE: return Shim5().balance;
        case ACCOUNT_MARGIN: return 0;
    }
    return 0;
}
inline string AccountInfoString(ENUM_ACCOUNT_INFO_STRING prop) {
    return string(prop == ACCOUNT_CURRENCY ? Shim5().currency : Shim5().company);
}

// --- positions ------------------------------------------------------------------------------------------
inline int PositionsTotal() { return static_cast<int>(Shim5().open.size()); }
inline uint64_t PositionGetTicket(int index) {
    if (index < 0 || index >= PositionsTotal()) return Shim5().selected = -1, 0;
    Shim5().selected = index;
    return Shim5().open[static_cast<size_t>(index)].ticket;
}
inline bool PositionSelectByTicket(uint64_t ticket) {
    for (size_t i = 0; i < Shim5().open.size(); i++)
        if (Shim5().open[i].ticket == ticket) return Shim5().selected = static_cast<int>(i), true;
    Shim5().selected = -1;
    Shim5().last_error = 4753;  // ERR_TRADE_POSITION_NOT_FOUND
    return false;
}
inline Shim5Position *Shim5Selected() {
    int i = Shim5().selected;
    return i >= 0 && i < PositionsTotal() ? &Shim5().open[static_cast<size_t>(i)] : nullptr;
}
inline long long PositionGetInteger(ENUM_POSITION_PROPERTY_INTEGER prop) {
    Shim5Position *p = Shim5Selected();
    if (!p) return 0;
    switch (prop) {
        case POSITION_TICKET:
        case POSITION_IDENTIFIER: return static_cast<long long>(p->ticket);
        case POSITION_TYPE: return p->type;
        case POSITION_MAGIC: return static_cast<long long>(p->magic);
        case POSITION_TIME_MSC: return p->open_ms;
    }
    return 0;
}
inline double PositionGetDouble(ENUM_POSITION_PROPERTY_DOUBLE prop) {
    Shim5Position *p = Shim5Selected();
    if (!p) return 0;
    Shim5Symbol *s = Shim5Find(p->symbol);
    switch (prop) {
        case POSITION_VOLUME: return p->volume;
        case POSITION_PRICE_OPEN: return p->open_price;
        case POSITION_SL: return p->sl;
        case POSITION_TP: return p->tp;
        case POSITION_PROFIT:
            if (!s || s->tick_size <= 0) return 0;
            return NormalizeDouble(((p->type == 0 ? s->bid - p->open_price : p->open_price - s->ask) / s->tick_size) *
                                       s->tick_value * p->volume, 2);
    }
    return 0;
}
inline string PositionGetString(ENUM_POSITION_PROPERTY_STRING prop) {
    Shim5Position *p = Shim5Selected();
    if (!p) return string("");
    return string(prop == POSITION_SYMBOL ? p->symbol : p->comment);
}

// --- deals history --------------------------------------------------------------------------------------
inline bool HistorySelect(datetime from, datetime to) {
    Shim5().history.clear();
    for (size_t i = 0; i < Shim5().deals.size(); i++) {
        long long t = Shim5().deals[i].time_ms / 1000;
        if (t >= from && t <= to) Shim5().history.push_back(i);
    }
    return true;
}
inline int HistoryDealsTotal() { return static_cast<int>(Shim5().history.size()); }
inline uint64_t HistoryDealGetTicket(int index) {
    if (index < 0 || index >= HistoryDealsTotal()) return 0;
    return Shim5().deals[Shim5().history[static_cast<size_t>(index)]].ticket;
}
inline Shim5Deal *Shim5FindDeal(uint64_t ticket) {
    for (size_t i : Shim5().history)
        if (Shim5().deals[i].ticket == ticket) return &Shim5().deals[i];
    return nullptr;
}
inline long long HistoryDealGetInteger(uint64_t ticket, ENUM_DEAL_PROPERTY_INTEGER prop) {
    Shim5Deal *d = Shim5FindDeal(ticket);
    if (!d) return 0;
    switch (prop) {
        case DEAL_ENTRY: return d->entry;
        case DEAL_REASON: return d->reason;
        case DEAL_POSITION_ID: return static_cast<long long>(d->position);
        case DEAL_TIME_MSC: return d->time_ms;
        case DEAL_MAGIC: return static_cast<long long>(d->magic);
        case DEAL_TYPE: return d->type;
    }
    return 0;
}
inline double HistoryDealGetDouble(uint64_t ticket, ENUM_DEAL_PROPERTY_DOUBLE prop) {
    Shim5Deal *d = Shim5FindDeal(ticket);
    if (!d) return 0;
    return prop == DEAL_VOLUME ? d->volume : d->price;
}
inline string HistoryDealGetString(uint64_t ticket, ENUM_DEAL_PROPERTY_STRING prop) {
    Shim5Deal *d = Shim5FindDeal(ticket);
    if (!d) return string("");
    return string(prop == DEAL_SYMBOL ? d->symbol : d->comment);
}

// --- the trade server -----------------------------------------------------------------------------------
inline bool Shim5LotsOk(const Shim5Symbol &s, double lots) {
    double steps = lots / s.lot_step;
    return lots >= s.min_lot - 1e-9 && lots <= s.max_lot + 1e-9 && std::fabs(steps - std::round(steps)) < 1e-6;
}
inline bool Shim5StopsOk(const Shim5Symbol &s, int type, double sl, double tp) {
    double ref = type == 0 ? s.bid : s.ask, min = s.stop_level * s.point;
    if (sl > 0 && (type == 0 ? ref - sl : sl - ref) < min - s.point / 2) return false;
    if (tp > 0 && (type == 0 ? tp - ref : ref - tp) < min - s.point / 2) return false;
    return true;
}
// Market execution takes FOK or IOC as the symbol allows them; RETURN only when it allows neither.
inline bool Shim5FillingOk(const Shim5Symbol &s, ENUM_ORDER_TYPE_FILLING f) {
    if (f == ORDER_FILLING_FOK) return (s.filling & SYMBOL_FILLING_FOK) != 0;
    if (f == ORDER_FILLING_IOC) return (s.filling & SYMBOL_FILLING_IOC) != 0;
    return s.filling == 0;
}
inline uint64_t Shim5AddDeal(const Shim5Position &p, int entry, int reason, int type, double volume, double price,
                          uint64_t magic, const std::string &comment) {
    Shim5Deal d;
    d.ticket = Shim5().next_ticket++;
    d.position = p.ticket;
    d.entry = entry;
    d.reason = reason;
    d.type = type;
    d.symbol = p.symbol;
    d.volume = volume;
    d.price = price;
    d.magic = magic;
    d.time_ms = ShimNowMs();
    d.comment = comment.substr(0, 31);
    Shim5().deals.push_back(d);
    return d.ticket;
}
// Close `volume` of open position `i` at `price`: the position keeps its ticket until nothing is left.
inline uint64_t Shim5Reduce(size_t i, double volume, double price, int reason, uint64_t magic, const std::string &comment) {
    Shim5Position &p = Shim5().open[i];
    uint64_t deal = Shim5AddDeal(p, DEAL_ENTRY_OUT, reason, p.type == 0 ? 1 : 0, volume, price, magic, comment);
    p.volume = NormalizeDouble(p.volume - volume, 8);
    if (p.volume <= 1e-9) {
        Shim5Position gone = p;
        gone.close_price = price;
        gone.close_ms = ShimNowMs();
        Shim5().open.erase(Shim5().open.begin() + static_cast<long>(i));
        Shim5().closed.push_back(gone);
    }
    return deal;
}

inline bool Shim5Refuse(MqlTradeResult &result, uint retcode) {
    result.retcode = retcode;
    Shim5().last_error = 4756;  // ERR_TRADE_SEND_FAILED
    return false;
}
inline bool Shim5Execute(MqlTradeRequest &request, MqlTradeResult &result, int reason) {
    ZeroMemory(result);
    if (!Shim5().hedging) {
        Print("mt5 shim: trading on a netting account is not modelled");
        return Shim5Refuse(result, TRADE_RETCODE_ERROR);
    }
    Shim5Symbol *s = Shim5Find(request.symbol.s);
    if (!s) return Shim5Refuse(result, TRADE_RETCODE_INVALID);
    result.bid = s->bid;
    result.ask = s->ask;
    if (request.action == TRADE_ACTION_SLTP) {
        for (auto &p : Shim5().open) {
            if (p.ticket != request.position) continue;
            if (std::fabs(p.sl - request.sl) < s->point / 2 && std::fabs(p.tp - request.tp) < s->point / 2)
                return Shim5Refuse(result, TRADE_RETCODE_NO_CHANGES);
            if (!Shim5StopsOk(*s, p.type, request.sl, request.tp)) return Shim5Refuse(result, TRADE_RETCODE_INVALID_STOPS);
            p.sl = request.sl;
            p.tp = request.tp;
            ShimSaveState();
            result.retcode = TRADE_RETCODE_DONE;
            return true;
        }
        return Shim5Refuse(result, TRADE_RETCODE_POSITION_CLOSED);
    }
    if (request.action != TRADE_ACTION_DEAL) {
        Print("mt5 shim: only TRADE_ACTION_DEAL and TRADE_ACTION_SLTP are modelled");
        return Shim5Refuse(result, TRADE_RETCODE_INVALID);
    }
    if (s->bid <= 0 || s->ask <= 0) return Shim5Refuse(result, TRADE_RETCODE_PRICE_OFF);
    if (!Shim5FillingOk(*s, request.type_filling)) return Shim5Refuse(result, TRADE_RETCODE_INVALID_FILL);
    double price = request.type == ORDER_TYPE_BUY ? s->ask : s->bid;
    if (request.position != 0) {  // closing (part of) a position: the opposite deal on it
        for (size_t i = 0; i < Shim5().open.size(); i++) {
            Shim5Position &p = Shim5().open[i];
            if (p.ticket != request.position) continue;
            if (static_cast<int>(request.type) == p.type) return Shim5Refuse(result, TRADE_RETCODE_INVALID);
            if (request.volume > p.volume + 1e-9) return Shim5Refuse(result, TRADE_RETCODE_INVALID_CLOSE_VOLUME);
            double rest = NormalizeDouble(p.volume - request.volume, 8);
            if (!Shim5LotsOk(*s, request.volume) || (rest > 1e-9 && !Shim5LotsOk(*s, rest)))
                return Shim5Refuse(result, TRADE_RETCODE_INVALID_VOLUME);
            result.order = Shim5().next_ticket++;
            result.deal = Shim5Reduce(i, request.volume, price, reason, request.magic, request.comment.s);
            result.volume = request.volume;
            result.price = price;
            result.retcode = TRADE_RETCODE_DONE;
            ShimSaveState();
            return true;
        }
        return Shim5Refuse(result, TRADE_RETCODE_POSITION_CLOSED);
    }
    if (!Shim5LotsOk(*s, request.volume)) return Shim5Refuse(result, TRADE_RETCODE_INVALID_VOLUME);
    if (!Shim5StopsOk(*s, request.type, request.sl, request.tp)) return Shim5Refuse(result, TRADE_RETCODE_INVALID_STOPS);
    Shim5Position p;
    p.ticket = Shim5().next_ticket++;  // a hedging position's ticket is the ticket of the order that opened it
    p.type = request.type;
    p.symbol = s->name;
    p.volume = p.initial = request.volume;
    p.open_price = price;
    p.sl = request.sl;
    p.tp = request.tp;
    p.magic = request.magic;
    p.comment = request.comment.s.substr(0, 31);
    p.open_ms = ShimNowMs();
    Shim5().open.push_back(p);
    result.order = p.ticket;
    result.deal = Shim5AddDeal(p, DEAL_ENTRY_IN, reason, p.type, p.volume, price, p.magic, p.comment);
    result.volume = request.volume;
    result.price = price;
    result.retcode = TRADE_RETCODE_DONE;
    ShimSaveState();
    return true;
}
// A trade request (the EA's OrderSend, or a person's on the control channel), noted in ECHO_EVENTS (when set)
// with the time it was made: an opening deal as order_send (the new position's ticket), a deal on a position as
// order_close, TRADE_ACTION_SLTP as order_modify (the position's ticket); -1 when refused.
inline bool Shim5Send(MqlTradeRequest &request, MqlTradeResult &result, int reason) {
    long long at = ShimNowNs();
    bool done = Shim5Execute(request, result, reason);
    const char *event = request.action == TRADE_ACTION_SLTP ? "order_modify"
                        : request.position != 0            ? "order_close"
                                                           : "order_send";
    long long ticket = request.position != 0 ? static_cast<long long>(request.position)
                                             : static_cast<long long>(result.order);
    ShimEvent(at, event, done ? ticket : -1, request.comment.s);
    return done;
}
inline bool OrderSend(MqlTradeRequest &request, MqlTradeResult &result) {
    return Shim5Send(request, result, DEAL_REASON_EXPERT);
}

// The trade server's own closes: a stop reached by the price (reason SL / TP), a stop-out (reason SO).
inline void ShimTerminalTick() {
    bool changed = false;
    for (size_t i = 0; i < Shim5().open.size();) {
        Shim5Position &p = Shim5().open[i];
        Shim5Symbol *s = Shim5Find(p.symbol);
        bool buy = p.type == 0;
        double ref = s == nullptr ? 0 : (buy ? s->bid : s->ask);
        if (s && ref > 0 && p.sl > 0 && (buy ? ref <= p.sl : ref >= p.sl)) {
            Shim5Reduce(i, p.volume, p.sl, DEAL_REASON_SL, p.magic, "[sl " + DoubleToString(p.sl, s->digits).s + "]");
            changed = true;
        } else if (s && ref > 0 && p.tp > 0 && (buy ? ref >= p.tp : ref <= p.tp)) {
            Shim5Reduce(i, p.volume, p.tp, DEAL_REASON_TP, p.magic, "[tp " + DoubleToString(p.tp, s->digits).s + "]");
            changed = true;
        } else {
            i++;
        }
    }
    if (changed) ShimSaveState();
}
inline void ShimTerminalStart() {
    ShimLoadBroker();
    ShimLoadState();
}

// --- native sockets, on real TCP sockets ------------------------------------------------------------------
inline std::map<int, int> &Shim5Sockets() {  // MQL5 handle -> file descriptor (-1: not connected)
    static std::map<int, int> sockets;
    return sockets;
}
inline int SocketCreate(uint flags = 0) {
    (void)flags;
    static int next = 1;
    Shim5Sockets()[next] = -1;
    return next++;
}
inline bool Shim5HostAllowed(const std::string &host) {
    const char *list = std::getenv("ECHO_ALLOWED_HOSTS");
    std::string all = std::string(",") + (list ? list : "") + ",";
    return all.find("," + host + ",") != std::string::npos;
}
inline bool SocketConnect(int socket, const string &server, uint port, uint timeout) {
    (void)timeout;
    auto it = Shim5Sockets().find(socket);
    if (it == Shim5Sockets().end()) return Shim5().last_error = ERR_NETSOCKET_INVALIDHANDLE, false;
    if (!Shim5HostAllowed(server.s)) return Shim5().last_error = ERR_FUNCTION_NOT_ALLOWED, false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::inet_pton(AF_INET, server.s.c_str(), &addr.sin_addr) != 1 ||
        ::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return Shim5().last_error = ERR_NETSOCKET_CANNOT_CONNECT, false;
    }
    it->second = fd;
    return true;
}
inline int Shim5Fd(int socket) {
    auto it = Shim5Sockets().find(socket);
    return it == Shim5Sockets().end() ? -1 : it->second;
}
inline bool SocketIsConnected(int socket) {
    int fd = Shim5Fd(socket);
    if (fd < 0) return false;
    char c;
    ssize_t r = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return !(r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK));
}
inline uint SocketIsReadable(int socket) {
    int fd = Shim5Fd(socket), n = 0;
    if (fd < 0 || ::ioctl(fd, FIONREAD, &n) != 0) return 0;
    return static_cast<uint>(n);
}
inline int SocketRead(int socket, MqlArray<uchar> &buffer, uint maxlen, uint timeout) {
    int fd = Shim5Fd(socket);
    if (fd < 0) return Shim5().last_error = ERR_NETSOCKET_INVALIDHANDLE, -1;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout)) <= 0) return Shim5().last_error = ERR_NETSOCKET_IO_ERROR, -1;
    if (buffer.v.size() < maxlen) buffer.v.resize(maxlen);
    ssize_t r = ::recv(fd, buffer.v.data(), maxlen, 0);
    if (r <= 0) return Shim5().last_error = ERR_NETSOCKET_IO_ERROR, -1;
    return static_cast<int>(r);
}
inline int SocketSend(int socket, const MqlArray<uchar> &buffer, uint length) {
    int fd = Shim5Fd(socket);
    if (fd < 0) return Shim5().last_error = ERR_NETSOCKET_INVALIDHANDLE, -1;
    size_t done = 0;
    while (done < length) {
        ssize_t w = ::send(fd, buffer.v.data() + done, length - done, MSG_NOSIGNAL);
        if (w <= 0) return Shim5().last_error = ERR_NETSOCKET_IO_ERROR, -1;
        done += static_cast<size_t>(w);
    }
    return static_cast<int>(length);
}
inline bool SocketClose(int socket) {
    int fd = Shim5Fd(socket);
    if (fd >= 0) ::close(fd);
    return Shim5Sockets().erase(socket) > 0;
}

// --- the control channel: a person at the terminal ------------------------------------------------------
inline std::string ShimControlCommand(const std::string &line) {
    std::istringstream in(line);
    std::string verb;
    in >> verb;
    MqlTradeRequest request;
    MqlTradeResult result;
    if (verb == "quote") {
        std::string sym;
        double bid, ask;
        in >> sym >> bid >> ask;
        Shim5Symbol *s = Shim5Find(sym);
        if (!s) return "error unknown symbol";
        s->bid = bid;
        s->ask = ask;
        return "ok";
    }
    if (verb == "stopout") {
        while (!Shim5().open.empty()) {
            Shim5Position &p = Shim5().open[0];
            Shim5Symbol *s = Shim5Find(p.symbol);
            Shim5Reduce(0, p.volume, p.type == 0 ? s->bid : s->ask, DEAL_REASON_SO, p.magic, "[so 12.5%]");
        }
        ShimSaveState();
        return "ok";
    }
    if (verb == "orders") {
        std::string out = "ok";
        char buf[96];
        for (auto &p : Shim5().open) {
            std::snprintf(buf, sizeof buf, " %llu:%s:%.2f", static_cast<unsigned long long>(p.ticket), p.symbol.c_str(),
                          p.volume);
            out += buf;
        }
        return out;
    }
    if (verb == "open") {
        std::string sym, side;
        in >> sym >> side >> request.volume >> request.sl >> request.tp;
        in >> request.magic;  // optional
        request.symbol = string(sym);
        request.type = side == "SELL" ? ORDER_TYPE_SELL : ORDER_TYPE_BUY;
        Shim5Symbol *s = Shim5Find(sym);
        request.type_filling = s && s->filling == 0 ? ORDER_FILLING_RETURN
                               : s && (s->filling & SYMBOL_FILLING_FOK) ? ORDER_FILLING_FOK : ORDER_FILLING_IOC;
        if (!Shim5Send(request, result, DEAL_REASON_CLIENT)) return "error " + std::to_string(result.retcode);
        return "ok " + std::to_string(result.order);
    }
    if (verb == "close" || verb == "modify") {
        unsigned long long ticket = 0;
        in >> ticket;
        for (auto &p : Shim5().open) {
            if (p.ticket != ticket) continue;
            Shim5Symbol *s = Shim5Find(p.symbol);
            request.symbol = string(p.symbol);
            request.position = ticket;
            request.type_filling = s->filling == 0 ? ORDER_FILLING_RETURN
                                   : (s->filling & SYMBOL_FILLING_FOK) ? ORDER_FILLING_FOK : ORDER_FILLING_IOC;
            if (verb == "close") {
                in >> request.volume;
                request.type = p.type == 0 ? ORDER_TYPE_SELL : ORDER_TYPE_BUY;
            } else {
                request.action = TRADE_ACTION_SLTP;
                in >> request.sl >> request.tp;
            }
            if (!Shim5Send(request, result, DEAL_REASON_CLIENT)) return "error " + std::to_string(result.retcode);
            return "ok " + std::to_string(ticket);
        }
        return "error " + std::to_string(TRADE_RETCODE_POSITION_CLOSED);
    }
    return "error unknown command";
}
