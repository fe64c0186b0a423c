//+------------------------------------------------------------------+
//| EchoSlave (MT5): executes Echo's copy commands on this hedging account (conformance/PROTOCOL.md, |
//| slave role), over MQL5's own sockets to the Echo Agent's TCP port on 127.0.0.1.                  |
//| - handshakes with the Market Watch symbols, their specs and the account's position mode;         |
//| - acknowledges every command line (pipe_delivery_ack) before acting on it;                       |
//| - answers a repeated command_id with its stored result instead of executing again (the results   |
//|   are kept in a file, so this holds across a terminal restart);                                  |
//| - re-checks the order's spread and slippage limits with the live price;                          |
//| - reports quotes about every 250 ms and its state (with the positions the broker closed by SL,   |
//|   TP or stop-out, from the deals history) after every command and every 5 s.                     |
//| MT5 differs from MT4 here: a position keeps its ticket through a partial close (the close_result |
//| names the same ticket as new_ticket); the filling mode comes from the symbol; the trade server's |
//| TRADE_RETCODE_* is translated by one table (RetcodeError).                                       |
//+------------------------------------------------------------------+
#property copyright "Echo"
#property version   "1.00"

#include <Echo/Json.mqh>
#include <Echo/Identity.mqh>
#include <Echo/Socket5.mqh>

input int    TcpPort = 7701;                 // the Agent's agent.tcp_listen port (host 127.0.0.1)
input int    TimerMs = 10;                   // how often the socket is polled (timer events come at most every 10-16 ms)
input int    ReconnectMs = 1000;             // wait between connection attempts
input int    QuotesMs = 250;                 // quotes period
input int    SnapshotMs = 5000;              // state snapshot period
input int    HeartbeatMs = 2000;             // heartbeat period
input int    DeviationPoints = 10;           // largest price deviation the trade server may fill at
input string ResultsFile = "echo_slave_results.jsonl";  // MQL5/Files: results by command_id
input string IdentityFile = "echo_terminal_id.txt";     // MQL5/Files: this terminal's id (made once)
input string AgentToken = "";                          // the Agent's agent.token, if it has one

#define ECHO_PROTOCOL_VERSION 2
#define ECHO_SEMVER "1.0.0"

string g_Account = "";
string g_TerminalId = "";
bool   g_Hedging = true;
uint   g_LastConnectTry = 0;
uint   g_LastQuotes = 0;
uint   g_LastSnapshot = 0;
uint   g_LastHeartbeat = 0;
int    g_HeartbeatSeq = 0;
int    g_LastConnectError = -1;
string g_ResultIds[];
string g_ResultLines[];
string g_RejectedSymbols = ",";
string g_OwnTickets = ",";        // positions Echo opened here (their ticket stays through partial closes)
string g_ClosedByCommand = ",";   // positions Echo closed completely with a close_order
bool   g_TradingEnabled = true;

//--- time ---------------------------------------------------------------------------------------------

long NowMs()
{
   return (long)TimeGMT() * 1000 + (long)(GetTickCount() % 1000);
}

//--- result memory --------------------------------------------------------------------------------------

int FindResult(const string command_id)
{
   for(int i = 0; i < ArraySize(g_ResultIds); i++)
      if(g_ResultIds[i] == command_id)
         return i;
   return -1;
}

// What a stored result says about this account's positions.
void NoteTickets(const string line)
{
   if(!JsonGetBool(line, "payload.success", false))
      return;
   string type = JsonGetString(line, "type");
   if(type == "execution_result")
      g_OwnTickets += IntegerToString(JsonGetLong(line, "payload.ticket", 0)) + ",";
   else if(type == "close_result" && JsonKind(line, "payload.new_ticket") != JSON_NUMBER)
      g_ClosedByCommand += IntegerToString(JsonGetLong(line, "payload.ticket", 0)) + ",";
}

void Remember(const string command_id, const string payload, const bool persist)
{
   int n = ArraySize(g_ResultIds);
   ArrayResize(g_ResultIds, n + 1);
   ArrayResize(g_ResultLines, n + 1);
   g_ResultIds[n] = command_id;
   g_ResultLines[n] = payload;
   NoteTickets(payload);
   if(!persist)
      return;
   int h = FileOpen(ResultsFile, FILE_READ | FILE_WRITE | FILE_TXT | FILE_ANSI);
   if(h == INVALID_HANDLE)
   {
      Print("EchoSlave: cannot write ", ResultsFile);
      return;
   }
   FileSeek(h, 0, SEEK_END);
   FileWriteString(h, payload + "\n");
   FileClose(h);
}

void LoadResults()
{
   if(!FileIsExist(ResultsFile))
      return;
   int h = FileOpen(ResultsFile, FILE_READ | FILE_TXT | FILE_ANSI);
   if(h == INVALID_HANDLE)
      return;
   while(!FileIsEnding(h))
   {
      string line = FileReadString(h);
      string id = JsonGetString(line, "payload.command_id");
      if(id != "" && FindResult(id) < 0)
         Remember(id, line, false);
   }
   FileClose(h);
}

//--- sending ----------------------------------------------------------------------------------------------

bool Send(const string type, const string members)
{
   return Sock5Write(JsonLine(type, NowMs(), members));
}

int Digits5(const string symbol)
{
   return (int)SymbolInfoInteger(symbol, SYMBOL_DIGITS);
}

string SymbolSpec(const string symbol)
{
   return "{" + JsonStr("broker_symbol", symbol) + "," + JsonStr("canonical_symbol", symbol) + "," +
          JsonInt("digits", Digits5(symbol)) + "," +
          JsonNum("point", SymbolInfoDouble(symbol, SYMBOL_POINT), 10) + "," +
          JsonNum("tick_size", SymbolInfoDouble(symbol, SYMBOL_TRADE_TICK_SIZE), 10) + "," +
          JsonNum("min_lot", SymbolInfoDouble(symbol, SYMBOL_VOLUME_MIN), 8) + "," +
          JsonNum("max_lot", SymbolInfoDouble(symbol, SYMBOL_VOLUME_MAX), 8) + "," +
          JsonNum("lot_step", SymbolInfoDouble(symbol, SYMBOL_VOLUME_STEP), 8) + "," +
          JsonInt("stop_level", SymbolInfoInteger(symbol, SYMBOL_TRADE_STOPS_LEVEL)) + "," +
          JsonNum("contract_size", SymbolInfoDouble(symbol, SYMBOL_TRADE_CONTRACT_SIZE), 8) + "," +
          JsonNum("tick_value", SymbolInfoDouble(symbol, SYMBOL_TRADE_TICK_VALUE), 8) + "}";
}

bool SendHandshake()
{
   string symbols = "";
   for(int i = 0; i < SymbolsTotal(true); i++)
   {
      string name = SymbolName(i, true);
      if(SymbolInfoDouble(name, SYMBOL_POINT) <= 0 || SymbolInfoDouble(name, SYMBOL_VOLUME_MIN) <= 0 ||
         SymbolInfoDouble(name, SYMBOL_VOLUME_STEP) <= 0 || SymbolInfoDouble(name, SYMBOL_TRADE_TICK_SIZE) <= 0)
      {
         Print("EchoSlave: invalid symbol specs, not reported: ", name);
         continue;
      }
      if(symbols != "")
         symbols += ",";
      symbols += SymbolSpec(name);
   }
   // the position mode: Core refuses a netting account (Echo copies each trade as a position of its own)
   string mode = "position_mode/hedging";
   if(!g_Hedging)
      mode = "position_mode/netting";
   string members = JsonStr("account_id", g_Account) + "," + JsonStr("role", "slave") + "," +
                    JsonInt("protocol_version", ECHO_PROTOCOL_VERSION) + "," + JsonStr("client_semver", ECHO_SEMVER) +
                    "," + JsonStr("client_id", "slave-" + g_Account) + "," +
                    JsonStr("broker", AccountInfoString(ACCOUNT_COMPANY)) + "," +
                    EchoIdentityMembers(g_TerminalId, AgentToken) + "," +
                    "\"capabilities\":{\"features\":[\"spec_report/v1\",\"quotes/250ms\",\"mt5/v1\",\"" + mode +
                    "\"],\"metrics\":[]}," + "\"symbols\":[" + symbols + "]";
   return Send("handshake", members);
}

void SendQuotes()
{
   string quotes = "";
   for(int i = 0; i < SymbolsTotal(true); i++)
   {
      string name = SymbolName(i, true);
      int digits = Digits5(name);
      double bid = SymbolInfoDouble(name, SYMBOL_BID);
      double ask = SymbolInfoDouble(name, SYMBOL_ASK);
      if(bid <= 0 || ask <= 0)
         continue;  // no prices (market closed, off quotes): nothing to report
      if(quotes != "")
         quotes += ",";
      quotes += "{" + JsonStr("symbol", name) + "," + JsonNum("bid", bid, digits) + "," + JsonNum("ask", ask, digits) +
                "," + JsonInt("time_ms", NowMs()) + "}";
   }
   if(quotes != "")
      Send("quotes", "\"quotes\":[" + quotes + "]");
}

string CloseReason(const long reason)
{
   if(reason == DEAL_REASON_SL)
      return "SL";
   if(reason == DEAL_REASON_TP)
      return "TP";
   if(reason == DEAL_REASON_SO)
      return "STOP_OUT";
   return "OTHER";
}

// Positions Echo opened that the broker closed on its own (SL, TP, stop-out, by hand) in the last 24 hours:
// their closing deals, newest first. A deal Echo made itself (a close_order: reason EXPERT with the
// position's magic number) is not one of them.
string RecentCloses()
{
   string closes = "";
   int reported = 0;
   datetime now = TimeCurrent();
   if(!HistorySelect(now - 86400, now + 60))
      return "";
   for(int h = HistoryDealsTotal() - 1; h >= 0 && reported < 50; h--)
   {
      ulong deal = HistoryDealGetTicket(h);
      long entry = HistoryDealGetInteger(deal, DEAL_ENTRY);
      if(entry != DEAL_ENTRY_OUT && entry != DEAL_ENTRY_OUT_BY)
         continue;
      long position = HistoryDealGetInteger(deal, DEAL_POSITION_ID);
      string ticket = "," + IntegerToString(position) + ",";
      if(StringFind(g_OwnTickets, ticket) < 0 || StringFind(g_ClosedByCommand, ticket) >= 0)
         continue;
      long reason = HistoryDealGetInteger(deal, DEAL_REASON);
      if(reason == DEAL_REASON_EXPERT)
         continue;
      string symbol = HistoryDealGetString(deal, DEAL_SYMBOL);
      if(closes != "")
         closes += ",";
      closes += "{" + JsonInt("ticket", position) + "," + JsonStr("symbol", symbol) + "," +
                JsonNum("lots", HistoryDealGetDouble(deal, DEAL_VOLUME), 8) + "," +
                JsonNum("close_price", HistoryDealGetDouble(deal, DEAL_PRICE), Digits5(symbol)) + "," +
                JsonInt("closed_at_ms", HistoryDealGetInteger(deal, DEAL_TIME_MSC)) + "," +
                JsonStr("reason", CloseReason(reason)) + "}";
      reported++;
   }
   return closes;
}

void SendSnapshot()
{
   string positions = "";
   for(int i = 0; i < PositionsTotal(); i++)
   {
      ulong ticket = PositionGetTicket(i);
      if(ticket == 0)
         continue;
      string symbol = PositionGetString(POSITION_SYMBOL);
      int digits = Digits5(symbol);
      string side = "BUY";
      if(PositionGetInteger(POSITION_TYPE) == POSITION_TYPE_SELL)
         side = "SELL";
      if(positions != "")
         positions += ",";
      positions += "{" + JsonInt("ticket", (long)ticket) + "," + JsonStr("symbol", symbol) + "," +
                   JsonStr("side", side) + "," + JsonNum("lots", PositionGetDouble(POSITION_VOLUME), 8) + "," +
                   JsonNum("open_price", PositionGetDouble(POSITION_PRICE_OPEN), digits) + "," +
                   JsonInt("magic_number", PositionGetInteger(POSITION_MAGIC)) + "," +
                   JsonStr("comment", PositionGetString(POSITION_COMMENT)) + "," +
                   JsonPrice("stop_loss", PositionGetDouble(POSITION_SL), digits) + "," +
                   JsonPrice("take_profit", PositionGetDouble(POSITION_TP), digits) + "," +
                   JsonInt("open_time_ms", PositionGetInteger(POSITION_TIME_MSC)) + "," +
                   JsonNum("profit", PositionGetDouble(POSITION_PROFIT), 2) + "}";
   }
   string tick_values = "";
   for(int j = 0; j < SymbolsTotal(true); j++)
   {
      string name = SymbolName(j, true);
      if(tick_values != "")
         tick_values += ",";
      tick_values += "{" + JsonStr("symbol", name) + "," +
                     JsonNum("tick_value", SymbolInfoDouble(name, SYMBOL_TRADE_TICK_VALUE), 8) + "}";
   }
   Send("state_snapshot", JsonNum("balance", AccountInfoDouble(ACCOUNT_BALANCE), 2) + "," +
        JsonNum("equity", AccountInfoDouble(ACCOUNT_EQUITY), 2) + "," +
        JsonNum("margin", AccountInfoDouble(ACCOUNT_MARGIN), 2) + "," +
        JsonNum("free_margin", AccountInfoDouble(ACCOUNT_MARGIN_FREE), 2) + "," +
        JsonStr("currency", AccountInfoString(ACCOUNT_CURRENCY)) + "," +
        JsonInt("leverage", AccountInfoInteger(ACCOUNT_LEVERAGE)) + "," + "\"positions\":[" + positions +
        "],\"tick_values\":[" + tick_values + "],\"recent_closes\":[" + RecentCloses() + "]");
}

//--- errors -------------------------------------------------------------------------------------------------

// The one table from the trade server's TRADE_RETCODE_* to Echo's error codes (PROTOCOL.md section 8). `mt4`
// receives the MT4 number of that code, which the results carry in mt4_error (the retcode itself goes in
// error_message); a retcode not listed is ERR_UNKNOWN with the retcode as its number.
string RetcodeError(const uint retcode, int &mt4)
{
   mt4 = 0;
   switch(retcode)
   {
      case TRADE_RETCODE_PLACED:
      case TRADE_RETCODE_DONE:
      case TRADE_RETCODE_DONE_PARTIAL:
         return "NO_ERROR";
      case TRADE_RETCODE_NO_CHANGES:          // the stops were already these: as MT4's error 1
         mt4 = 1;
         return "NO_ERROR";
      case TRADE_RETCODE_REQUOTE:
      case TRADE_RETCODE_PRICE_CHANGED:
         mt4 = 138;
         return "ERR_REQUOTE";
      case TRADE_RETCODE_TIMEOUT:
         mt4 = 128;
         return "ERR_TIMEOUT";
      case TRADE_RETCODE_INVALID_PRICE:
         mt4 = 129;
         return "ERR_INVALID_PRICE";
      case TRADE_RETCODE_INVALID_STOPS:
         mt4 = 130;
         return "ERR_INVALID_STOPS";
      case TRADE_RETCODE_INVALID_VOLUME:
      case TRADE_RETCODE_INVALID_CLOSE_VOLUME:
      case TRADE_RETCODE_LIMIT_VOLUME:
         mt4 = 131;
         return "ERR_INVALID_TRADE_VOLUME";
      case TRADE_RETCODE_MARKET_CLOSED:
         mt4 = 132;
         return "ERR_MARKET_CLOSED";
      case TRADE_RETCODE_TRADE_DISABLED:
      case TRADE_RETCODE_SERVER_DISABLES_AT:
      case TRADE_RETCODE_CLIENT_DISABLES_AT:
      case TRADE_RETCODE_ONLY_REAL:
      case TRADE_RETCODE_LONG_ONLY:
      case TRADE_RETCODE_SHORT_ONLY:
      case TRADE_RETCODE_CLOSE_ONLY:
      case TRADE_RETCODE_HEDGE_PROHIBITED:
         mt4 = 133;
         return "ERR_TRADE_DISABLED";
      case TRADE_RETCODE_NO_MONEY:
         mt4 = 134;
         return "ERR_NOT_ENOUGH_MONEY";
      case TRADE_RETCODE_PRICE_OFF:
         mt4 = 136;
         return "ERR_OFF_QUOTES";
      case TRADE_RETCODE_TOO_MANY_REQUESTS:
      case TRADE_RETCODE_CONNECTION:
         mt4 = 137;
         return "ERR_BROKER_BUSY";
      case TRADE_RETCODE_LOCKED:
      case TRADE_RETCODE_CLOSE_ORDER_EXIST:
         mt4 = 146;
         return "ERR_TRADE_CONTEXT_BUSY";
      case TRADE_RETCODE_POSITION_CLOSED:
         mt4 = 4108;
         return "ERR_INVALID_TICKET";
      case TRADE_RETCODE_REJECT:
      case TRADE_RETCODE_CANCEL:
      case TRADE_RETCODE_ERROR:
      case TRADE_RETCODE_INVALID:
      case TRADE_RETCODE_INVALID_EXPIRATION:
      case TRADE_RETCODE_ORDER_CHANGED:
      case TRADE_RETCODE_FROZEN:
      case TRADE_RETCODE_INVALID_FILL:
      case TRADE_RETCODE_LIMIT_ORDERS:
      case TRADE_RETCODE_INVALID_ORDER:
      case TRADE_RETCODE_LIMIT_POSITIONS:
      case TRADE_RETCODE_REJECT_CANCEL:
      case TRADE_RETCODE_FIFO_CLOSE:
         mt4 = 2;
         return "ERR_COMMON";
   }
   mt4 = (int)retcode;
   return "ERR_UNKNOWN";
}

string ResultHead(const string line, const bool success, const string error_code)
{
   return JsonStr("command_id", JsonGetString(line, "payload.command_id")) + "," +
          JsonStr("trade_id", JsonGetString(line, "payload.trade_id")) + "," +
          JsonStr("trace_id", JsonGetString(line, "payload.trace_id")) + "," + JsonBool("success", success) + "," +
          JsonStr("error_code", error_code);
}

// Every field of the result type is written, absent values as null (PROTOCOL.md 6.12-6.14).
string Failure(const string type, const string line, const string error_code, const int mt4_error,
               const string message)
{
   string extra = "";
   if(type == "execution_result")
      extra = JsonNull("ticket") + "," + JsonNull("executed_price") + "," + JsonNull("executed_lots") + "," +
              JsonNull("executed_at_ms");
   else if(type == "close_result")
      extra = JsonInt("ticket", JsonGetLong(line, "payload.ticket", 0)) + "," + JsonNum("closed_lots", 0, 1) + "," +
              JsonNull("close_price") + "," + JsonNull("new_ticket") + "," + JsonNum("remaining_lots", 0, 1);
   else
      extra = JsonInt("ticket", JsonGetLong(line, "payload.ticket", 0)) + "," + JsonNull("stop_loss") + "," +
              JsonNull("take_profit");
   return JsonLine(type, NowMs(), ResultHead(line, false, error_code) + "," + extra + "," +
                   JsonInt("mt4_error", mt4_error) + "," + JsonStr("error_message", message));
}

// A refusal of the trade server, by its retcode.
string Refused(const string type, const string line, const MqlTradeResult &result, const string what)
{
   int mt4 = 0;
   string code = RetcodeError(result.retcode, mt4);
   if(code == "NO_ERROR")  // OrderSend failed before the server answered: the terminal's own error
   {
      code = "ERR_COMMON";
      mt4 = 2;
   }
   return Failure(type, line, code, mt4, what + " failed: retcode " + IntegerToString(result.retcode) + " " +
                  result.comment + " (error " + IntegerToString(GetLastError()) + ")");
}

string Ok()
{
   return "," + JsonInt("mt4_error", 0) + "," + JsonStr("error_message", "");
}

//--- commands -------------------------------------------------------------------------------------------

// Market execution takes FOK or IOC as the symbol allows; RETURN when the symbol allows neither.
ENUM_ORDER_TYPE_FILLING Filling(const string symbol)
{
   long modes = SymbolInfoInteger(symbol, SYMBOL_FILLING_MODE);
   if((modes & SYMBOL_FILLING_FOK) != 0)
      return ORDER_FILLING_FOK;
   if((modes & SYMBOL_FILLING_IOC) != 0)
      return ORDER_FILLING_IOC;
   return ORDER_FILLING_RETURN;
}

string Opened(const string line, const ulong ticket, const int digits)
{
   return JsonLine("execution_result", NowMs(), ResultHead(line, true, "NO_ERROR") + "," +
                   JsonInt("ticket", (long)ticket) + "," +
                   JsonNum("executed_price", PositionGetDouble(POSITION_PRICE_OPEN), digits) + "," +
                   JsonNum("executed_lots", PositionGetDouble(POSITION_VOLUME), 8) + "," +
                   JsonInt("executed_at_ms", NowMs()) + Ok());
}

string Execute(const string line)
{
   string symbol = JsonGetString(line, "payload.symbol");
   string side = JsonGetString(line, "payload.side");
   double lots = JsonGetDouble(line, "payload.lot_size", 0);
   string comment = JsonGetString(line, "payload.comment");
   long magic = JsonGetLong(line, "payload.magic_number", 0);
   int digits = Digits5(symbol);
   double point = SymbolInfoDouble(symbol, SYMBOL_POINT);
   if(point <= 0)
      return Failure("execution_result", line, "ERR_UNKNOWN_SYMBOL", 4106, "unknown symbol " + symbol);
   // a position of this trade already here (a repeat after this terminal lost its memory): that one is the result
   for(int i = 0; i < PositionsTotal(); i++)
   {
      ulong held = PositionGetTicket(i);
      if(held != 0 && StringFind(PositionGetString(POSITION_COMMENT), comment) == 0 &&
         PositionGetInteger(POSITION_MAGIC) == magic)
         return Opened(line, held, digits);
   }
   double bid = SymbolInfoDouble(symbol, SYMBOL_BID);
   double ask = SymbolInfoDouble(symbol, SYMBOL_ASK);
   if(bid <= 0 || ask <= 0)
      return Failure("execution_result", line, "ERR_OFF_QUOTES", 136, "off quotes: no prices for " + symbol);
   MqlTradeRequest request;
   ZeroMemory(request);
   request.type = ORDER_TYPE_BUY;
   request.price = ask;
   if(side == "SELL")
   {
      request.type = ORDER_TYPE_SELL;
      request.price = bid;
   }
   if(JsonKind(line, "payload.max_spread_points") == JSON_NUMBER)
   {
      double spread = (ask - bid) / point;
      if(spread > JsonGetDouble(line, "payload.max_spread_points", 0) + 1e-9)
         return Failure("execution_result", line, "ERR_SPREAD_TOO_WIDE", 0,
                        "not sent: spread " + DoubleToString(spread, 1) + " points");
   }
   if(JsonKind(line, "payload.max_slippage_points") == JSON_NUMBER &&
      JsonKind(line, "payload.master_price") == JSON_NUMBER)
   {
      double slippage = MathAbs(request.price - JsonGetDouble(line, "payload.master_price", request.price)) / point;
      if(slippage > JsonGetDouble(line, "payload.max_slippage_points", 0) + 1e-9)
         return Failure("execution_result", line, "ERR_SLIPPAGE_TOO_HIGH", 0,
                        "not sent: price " + DoubleToString(request.price, digits) + " is " +
                        DoubleToString(slippage, 1) + " points from the master's");
   }
   request.action = TRADE_ACTION_DEAL;
   request.symbol = symbol;
   request.volume = lots;
   request.sl = JsonGetDouble(line, "payload.stop_loss", 0);
   request.tp = JsonGetDouble(line, "payload.take_profit", 0);
   request.deviation = DeviationPoints;
   request.magic = magic;
   request.comment = comment;
   request.type_filling = Filling(symbol);
   MqlTradeResult result;
   ZeroMemory(result);
   bool sent = OrderSend(request, result);
   if(!sent && result.retcode == TRADE_RETCODE_INVALID_STOPS && (request.sl > 0 || request.tp > 0))
   {
      // stops too close for the broker's StopLevel: open without them (Core sets them by modify)
      request.sl = 0;
      request.tp = 0;
      ZeroMemory(result);
      sent = OrderSend(request, result);
   }
   if(!sent || (result.retcode != TRADE_RETCODE_DONE && result.retcode != TRADE_RETCODE_DONE_PARTIAL &&
                result.retcode != TRADE_RETCODE_PLACED))
      return Refused("execution_result", line, result, "OrderSend");
   // on a hedging account the position's ticket is the ticket of the order that opened it
   if(!PositionSelectByTicket(result.order))
      return Failure("execution_result", line, "ERR_COMMON", 2, "order sent but no position " +
                     IntegerToString((long)result.order));
   return Opened(line, result.order, digits);
}

// The closing deal Echo made on a position that is no longer open (a close this terminal forgot), or 0.
ulong ClosingDeal(const ulong ticket)
{
   datetime now = TimeCurrent();
   if(!HistorySelect(now - 86400 * 7, now + 60))
      return 0;
   for(int h = HistoryDealsTotal() - 1; h >= 0; h--)
   {
      ulong deal = HistoryDealGetTicket(h);
      if(HistoryDealGetInteger(deal, DEAL_POSITION_ID) == (long)ticket &&
         HistoryDealGetInteger(deal, DEAL_ENTRY) == DEAL_ENTRY_OUT &&
         HistoryDealGetInteger(deal, DEAL_REASON) == DEAL_REASON_EXPERT)
         return deal;
   }
   return 0;
}

// After a partial close the position keeps its ticket: the result names it as new_ticket, with what is left
// (PROTOCOL.md 6.13); after a full close new_ticket is null.
string CloseResult(const string line, const ulong ticket, const double closed_lots, const double price,
                   const int digits)
{
   string members = ResultHead(line, true, "NO_ERROR") + "," + JsonInt("ticket", (long)ticket) + "," +
                    JsonNum("closed_lots", closed_lots, 8) + "," + JsonNum("close_price", price, digits);
   if(PositionSelectByTicket(ticket))
      members += "," + JsonInt("new_ticket", (long)ticket) + "," +
                 JsonNum("remaining_lots", PositionGetDouble(POSITION_VOLUME), 8);
   else
      members += "," + JsonNull("new_ticket") + "," + JsonNum("remaining_lots", 0, 1);
   return JsonLine("close_result", NowMs(), members + Ok());
}

string Close(const string line)
{
   ulong ticket = (ulong)JsonGetLong(line, "payload.ticket", 0);
   double lots = JsonGetDouble(line, "payload.lot_size", 0);
   if(!PositionSelectByTicket(ticket))
   {
      ulong deal = ClosingDeal(ticket);
      if(deal != 0)  // closed by an earlier close_order this terminal forgot: the history answers
      {
         string symbol = HistoryDealGetString(deal, DEAL_SYMBOL);
         return CloseResult(line, ticket, HistoryDealGetDouble(deal, DEAL_VOLUME),
                            HistoryDealGetDouble(deal, DEAL_PRICE), Digits5(symbol));
      }
      return Failure("close_result", line, "ERR_INVALID_TICKET", 4108, "no open position " +
                     IntegerToString((long)ticket));
   }
   string symbol = PositionGetString(POSITION_SYMBOL);
   double volume = PositionGetDouble(POSITION_VOLUME);
   if(lots > volume)
      lots = volume;
   MqlTradeRequest request;
   ZeroMemory(request);
   request.action = TRADE_ACTION_DEAL;
   request.position = ticket;
   request.symbol = symbol;
   request.volume = lots;
   request.type = ORDER_TYPE_SELL;
   request.price = SymbolInfoDouble(symbol, SYMBOL_BID);
   if(PositionGetInteger(POSITION_TYPE) == POSITION_TYPE_SELL)
   {
      request.type = ORDER_TYPE_BUY;
      request.price = SymbolInfoDouble(symbol, SYMBOL_ASK);
   }
   request.deviation = DeviationPoints;
   request.magic = PositionGetInteger(POSITION_MAGIC);
   request.type_filling = Filling(symbol);
   MqlTradeResult result;
   ZeroMemory(result);
   if(!OrderSend(request, result) || (result.retcode != TRADE_RETCODE_DONE &&
                                      result.retcode != TRADE_RETCODE_DONE_PARTIAL))
      return Refused("close_result", line, result, "closing OrderSend");
   double closed = result.volume;
   if(closed <= 0)
      closed = lots;
   return CloseResult(line, ticket, closed, result.price, Digits5(symbol));
}

string Modify(const string line)
{
   ulong ticket = (ulong)JsonGetLong(line, "payload.ticket", 0);
   if(!PositionSelectByTicket(ticket))
      return Failure("modify_result", line, "ERR_INVALID_TICKET", 4108, "no open position " +
                     IntegerToString((long)ticket));
   string symbol = PositionGetString(POSITION_SYMBOL);
   int digits = Digits5(symbol);
   MqlTradeRequest request;
   ZeroMemory(request);
   request.action = TRADE_ACTION_SLTP;
   request.position = ticket;
   request.symbol = symbol;
   request.sl = JsonGetDouble(line, "payload.stop_loss", 0);
   request.tp = JsonGetDouble(line, "payload.take_profit", 0);
   request.magic = PositionGetInteger(POSITION_MAGIC);
   MqlTradeResult result;
   ZeroMemory(result);
   if(!OrderSend(request, result) && result.retcode != TRADE_RETCODE_NO_CHANGES)
      return Refused("modify_result", line, result, "OrderSend (SL/TP)");
   if(result.retcode != TRADE_RETCODE_DONE && result.retcode != TRADE_RETCODE_NO_CHANGES)
      return Refused("modify_result", line, result, "OrderSend (SL/TP)");
   return JsonLine("modify_result", NowMs(), ResultHead(line, true, "NO_ERROR") + "," +
                   JsonInt("ticket", (long)ticket) + "," + JsonPrice("stop_loss", request.sl, digits) + "," +
                   JsonPrice("take_profit", request.tp, digits) + Ok());
}

void OnCommand(const string type, const string line)
{
   string command_id = JsonGetString(line, "payload.command_id");
   string trace_id = JsonGetString(line, "payload.trace_id");
   int known = FindResult(command_id);
   string status = "OK";
   string reason = "";
   if(known < 0 && !g_TradingEnabled)
   {
      status = "FAILED";
      reason = "trading disabled: the handshake was REJECTED";
   }
   else if(known < 0 && type == "execute_order" &&
           StringFind(g_RejectedSymbols, "," + JsonGetString(line, "payload.symbol") + ",") >= 0)
   {
      status = "FAILED";
      reason = "symbol REJECTED by Echo";
   }
   Send("pipe_delivery_ack", JsonStr("command_id", command_id) + "," + JsonStr("trace_id", trace_id) + "," +
        JsonStr("status", status) + "," + JsonStr("reason", reason));
   if(status != "OK")
      return;
   if(known >= 0)
   {
      Sock5Write(g_ResultLines[known] + "\n");  // a repeat: the stored answer, nothing executed again
      return;
   }
   string result = "";
   if(type == "execute_order")
      result = Execute(line);
   else if(type == "close_order")
      result = Close(line);
   else
      result = Modify(line);
   string stored = StringSubstr(result, 0, StringLen(result) - 1);
   Remember(command_id, stored, true);
   Sock5Write(result);
   SendSnapshot();
}

void OnRegistration(const string line)
{
   string status = JsonGetString(line, "payload.status");
   g_TradingEnabled = status != "REJECTED";
   g_RejectedSymbols = ",";
   int n = JsonArrayLength(line, "payload.symbols");
   for(int i = 0; i < n; i++)
   {
      string path = "payload.symbols[" + IntegerToString(i) + "]";
      if(JsonGetString(line, path + ".status") == "REJECTED")
         g_RejectedSymbols += JsonGetString(line, path + ".broker_symbol") + ",";
   }
   Print("EchoSlave: handshake ", status, "; rejected symbols ", g_RejectedSymbols);
   int errors = JsonArrayLength(line, "payload.errors");
   for(int e = 0; e < errors; e++)
      Print("EchoSlave: ", JsonGetString(line, "payload.errors[" + IntegerToString(e) + "].code"), ": ",
            JsonGetString(line, "payload.errors[" + IntegerToString(e) + "].message"));
}

void OnLine(const string line)
{
   string type = JsonGetString(line, "type");
   if(type == "execute_order" || type == "close_order" || type == "modify_order")
      OnCommand(type, line);
   else if(type == "symbol_registration_result")
      OnRegistration(line);
   else if(type == "error")
      Print("EchoSlave: agent error ", JsonGetString(line, "payload.code"), ": ", JsonGetString(line, "payload.message"));
}

// Why the connection cannot be made, once per reason (not on every attempt).
void ReportConnectFailure()
{
   if(g_Sock5LastError == g_LastConnectError)
      return;
   g_LastConnectError = g_Sock5LastError;
   if(g_Sock5LastError == ECHO_SOCK5_NOT_ALLOWED)
      Print("EchoSlave: the terminal does not allow connections to 127.0.0.1: add 127.0.0.1 to Tools > Options > ",
            "Expert Advisors > 'Allow WebRequest for listed URL'");
   else
      Print("EchoSlave: no Echo agent at 127.0.0.1:", IntegerToString(TcpPort), " (error ",
            IntegerToString(g_Sock5LastError), "); trying again every ", IntegerToString(ReconnectMs), " ms");
}

//--- events -------------------------------------------------------------------------------------------------

int OnInit()
{
   long login = AccountInfoInteger(ACCOUNT_LOGIN);
   g_Account = IntegerToString(login);
   if(TcpPort < 1 || TcpPort > 65535)
   {
      Print("EchoSlave: TcpPort must be 1..65535, got ", IntegerToString(TcpPort));
      return INIT_FAILED;
   }
   g_Hedging = AccountInfoInteger(ACCOUNT_MARGIN_MODE) == ACCOUNT_MARGIN_MODE_RETAIL_HEDGING;
   if(!g_Hedging)
      Print("EchoSlave: this is a netting account; Echo copies to hedging accounts only and will refuse it");
   g_TerminalId = EchoTerminalId(IdentityFile, login);
   LoadResults();
   EventSetMillisecondTimer(TimerMs);
   return INIT_SUCCEEDED;
}

void OnDeinit(const int reason)
{
   EventKillTimer();
   Sock5Close();
}

void OnTimer()
{
   uint now = GetTickCount();
   if(!Sock5Connected())
   {
      if(now - g_LastConnectTry < (uint)ReconnectMs && g_LastConnectTry != 0)
         return;
      g_LastConnectTry = now;
      if(!Sock5Open(TcpPort))
      {
         ReportConnectFailure();
         return;
      }
      g_LastConnectError = 0;
      if(!SendHandshake())
         return;
      Print("EchoSlave: connected to the Echo agent as ", g_Account);
      SendSnapshot();
      g_LastSnapshot = now;
   }
   string lines[];
   int n = Sock5ReadLines(lines);
   for(int i = 0; i < n; i++)
      OnLine(lines[i]);
   if(now - g_LastQuotes >= (uint)QuotesMs)
   {
      SendQuotes();
      g_LastQuotes = now;
   }
   if(now - g_LastSnapshot >= (uint)SnapshotMs)
   {
      SendSnapshot();
      g_LastSnapshot = now;
   }
   if(now - g_LastHeartbeat >= (uint)HeartbeatMs)
   {
      g_HeartbeatSeq++;
      Send("heartbeat", JsonInt("seq", g_HeartbeatSeq));
      g_LastHeartbeat = now;
   }
}
//+------------------------------------------------------------------+
