//+------------------------------------------------------------------+
//| EchoSlave: executes Echo's copy commands on this account (conformance/PROTOCOL.md, slave role).  |
//| - connects to the Echo Agent's named pipe, handshakes with the Market Watch symbols and specs;  |
//| - acknowledges every command line (pipe_delivery_ack) before acting on it;                      |
//| - answers a repeated command_id with its stored result instead of executing again (the results  |
//|   are kept in a file, so this holds across a terminal restart);                                 |
//| - re-checks the order's spread and slippage limits with the live price;                         |
//| - reports quotes about every 250 ms and its state after every command and every 5 s.            |
//+------------------------------------------------------------------+
#property strict
#property copyright "Echo"
#property version   "1.00"

#include <Echo/Json.mqh>
#include <Echo/Link.mqh>
#include <Echo/Identity.mqh>

input string Transport = "pipe";             // how to reach the Agent: "pipe" (the named pipe) or "tcp" (127.0.0.1:TcpPort)
input string PipeName = "echo";              // the Agent's pipe (\\.\pipe\NAME)
input int    TcpPort = 7701;                 // the Agent's agent.tcp_listen port (Transport = tcp)
input int    TimerMs = 10;                   // how often the pipe is polled (timer events come at most every 10-16 ms)
input int    ReconnectMs = 1000;             // wait between connection attempts
input int    QuotesMs = 250;                 // quotes period
input int    SnapshotMs = 5000;              // state snapshot period
input int    HeartbeatMs = 2000;             // heartbeat period
input string ResultsFile = "echo_slave_results.jsonl";  // MQL4/Files: results by command_id
input string IdentityFile = "echo_terminal_id.txt";     // MQL4/Files: this terminal's id (made once)
input string AgentToken = "";                          // the Agent's agent.token, if it has one

#define ECHO_PROTOCOL_VERSION 2
#define ECHO_SEMVER "1.0.0"

string g_Account = "";
string g_TerminalId = "";
uint   g_LastConnectTry = 0;
uint   g_LastQuotes = 0;
uint   g_LastSnapshot = 0;
uint   g_LastHeartbeat = 0;
int    g_HeartbeatSeq = 0;
string g_ResultIds[];
string g_ResultLines[];
string g_RejectedSymbols = ",";
string g_OwnTickets = ",";        // tickets Echo opened here (and remainders of their partial closes)
string g_ClosedByCommand = ",";   // tickets Echo closed with a close_order
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

// What a stored result says about this account's tickets.
void NoteTickets(const string line)
{
   if(!JsonGetBool(line, "payload.success", false))
      return;
   string type = JsonGetString(line, "type");
   if(type == "execution_result")
      g_OwnTickets += IntegerToString(JsonGetLong(line, "payload.ticket", 0)) + ",";
   else if(type == "close_result")
   {
      g_ClosedByCommand += IntegerToString(JsonGetLong(line, "payload.ticket", 0)) + ",";
      if(JsonKind(line, "payload.new_ticket") == JSON_NUMBER)
         g_OwnTickets += IntegerToString(JsonGetLong(line, "payload.new_ticket", 0)) + ",";
   }
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
   return LinkWrite(JsonLine(type, NowMs(), members));
}

string SymbolSpec(const string symbol)
{
   return "{" + JsonStr("broker_symbol", symbol) + "," + JsonStr("canonical_symbol", symbol) + "," +
          JsonInt("digits", (long)MarketInfo(symbol, MODE_DIGITS)) + "," +
          JsonNum("point", MarketInfo(symbol, MODE_POINT), 10) + "," +
          JsonNum("tick_size", MarketInfo(symbol, MODE_TICKSIZE), 10) + "," +
          JsonNum("min_lot", MarketInfo(symbol, MODE_MINLOT), 8) + "," +
          JsonNum("max_lot", MarketInfo(symbol, MODE_MAXLOT), 8) + "," +
          JsonNum("lot_step", MarketInfo(symbol, MODE_LOTSTEP), 8) + "," +
          JsonInt("stop_level", (long)MarketInfo(symbol, MODE_STOPLEVEL)) + "," +
          JsonNum("contract_size", MarketInfo(symbol, MODE_LOTSIZE), 8) + "," +
          JsonNum("tick_value", MarketInfo(symbol, MODE_TICKVALUE), 8) + "}";
}

bool SendHandshake()
{
   string symbols = "";
   for(int i = 0; i < SymbolsTotal(true); i++)
   {
      string name = SymbolName(i, true);
      if(MarketInfo(name, MODE_POINT) <= 0 || MarketInfo(name, MODE_MINLOT) <= 0 ||
         MarketInfo(name, MODE_LOTSTEP) <= 0 || MarketInfo(name, MODE_TICKSIZE) <= 0)
      {
         Print("EchoSlave: invalid symbol specs, not reported: ", name);
         continue;
      }
      if(symbols != "")
         symbols += ",";
      symbols += SymbolSpec(name);
   }
   string members = JsonStr("account_id", g_Account) + "," + JsonStr("role", "slave") + "," +
                    JsonInt("protocol_version", ECHO_PROTOCOL_VERSION) + "," + JsonStr("client_semver", ECHO_SEMVER) +
                    "," + JsonStr("client_id", "slave-" + g_Account) + "," +
                    EchoIdentityMembers(g_TerminalId, AgentToken) + "," +
                    "\"capabilities\":{\"features\":[\"spec_report/v1\",\"quotes/250ms\"],\"metrics\":[]}," +
                    "\"symbols\":[" + symbols + "]";
   return Send("handshake", members);
}

void SendQuotes()
{
   string quotes = "";
   for(int i = 0; i < SymbolsTotal(true); i++)
   {
      string name = SymbolName(i, true);
      int digits = (int)MarketInfo(name, MODE_DIGITS);
      if(MarketInfo(name, MODE_BID) <= 0 || MarketInfo(name, MODE_ASK) <= 0)
         continue;  // no prices (market closed, off quotes): nothing to report
      if(quotes != "")
         quotes += ",";
      quotes += "{" + JsonStr("symbol", name) + "," + JsonNum("bid", MarketInfo(name, MODE_BID), digits) + "," +
                JsonNum("ask", MarketInfo(name, MODE_ASK), digits) + "," + JsonInt("time_ms", NowMs()) + "}";
   }
   if(quotes != "")
      Send("quotes", "\"quotes\":[" + quotes + "]");
}

void SendSnapshot()
{
   string positions = "";
   for(int i = 0; i < OrdersTotal(); i++)
   {
      if(!OrderSelect(i, SELECT_BY_POS, MODE_TRADES))
         continue;
      int digits = (int)MarketInfo(OrderSymbol(), MODE_DIGITS);
      string side = "BUY";
      if(OrderType() == OP_SELL)
         side = "SELL";
      if(positions != "")
         positions += ",";
      positions += "{" + JsonInt("ticket", OrderTicket()) + "," + JsonStr("symbol", OrderSymbol()) + "," +
                   JsonStr("side", side) + "," + JsonNum("lots", OrderLots(), 8) + "," +
                   JsonNum("open_price", OrderOpenPrice(), digits) + "," + JsonInt("magic_number", OrderMagicNumber()) +
                   "," + JsonStr("comment", OrderComment()) + "," + JsonPrice("stop_loss", OrderStopLoss(), digits) +
                   "," + JsonPrice("take_profit", OrderTakeProfit(), digits) + "," +
                   JsonNum("profit", OrderProfit(), 2) + "}";
   }
   // positions Echo opened that the broker closed on its own (SL, TP, stop-out, by hand): last 24 hours
   string closes = "";
   int reported = 0;
   for(int h = OrdersHistoryTotal() - 1; h >= 0 && reported < 50; h--)
   {
      if(!OrderSelect(h, SELECT_BY_POS, MODE_HISTORY))
         continue;
      string ticket = "," + IntegerToString(OrderTicket()) + ",";
      if(StringFind(g_OwnTickets, ticket) < 0 || StringFind(g_ClosedByCommand, ticket) >= 0)
         continue;
      if(OrderCloseTime() < TimeCurrent() - 86400)
         continue;
      string comment = OrderComment();
      string reason = "OTHER";
      if(StringFind(comment, "[sl]") >= 0)
         reason = "SL";
      else if(StringFind(comment, "[tp]") >= 0)
         reason = "TP";
      else if(StringFind(comment, "so:") == 0)
         reason = "STOP_OUT";
      if(closes != "")
         closes += ",";
      closes += "{" + JsonInt("ticket", OrderTicket()) + "," + JsonStr("symbol", OrderSymbol()) + "," +
                JsonNum("lots", OrderLots(), 8) + "," +
                JsonNum("close_price", OrderClosePrice(), (int)MarketInfo(OrderSymbol(), MODE_DIGITS)) + "," +
                JsonInt("closed_at_ms", (long)OrderCloseTime() * 1000) + "," + JsonStr("reason", reason) + "}";
      reported++;
   }
   string tick_values = "";
   for(int j = 0; j < SymbolsTotal(true); j++)
   {
      string name = SymbolName(j, true);
      if(tick_values != "")
         tick_values += ",";
      tick_values += "{" + JsonStr("symbol", name) + "," + JsonNum("tick_value", MarketInfo(name, MODE_TICKVALUE), 8) + "}";
   }
   Send("state_snapshot", JsonNum("balance", AccountBalance(), 2) + "," + JsonNum("equity", AccountEquity(), 2) + "," +
        JsonNum("margin", AccountMargin(), 2) + "," + JsonNum("free_margin", AccountFreeMargin(), 2) + "," +
        JsonStr("currency", AccountCurrency()) + "," + JsonInt("leverage", AccountLeverage()) + "," +
        "\"positions\":[" + positions + "],\"tick_values\":[" + tick_values + "],\"recent_closes\":[" + closes + "]");
}

//--- errors -------------------------------------------------------------------------------------------------

string ErrorCodeName(const int mt4_error)
{
   if(mt4_error == 0 || mt4_error == 1)
      return "NO_ERROR";
   if(mt4_error == 128)
      return "ERR_TIMEOUT";
   if(mt4_error == 129)
      return "ERR_INVALID_PRICE";
   if(mt4_error == 130)
      return "ERR_INVALID_STOPS";
   if(mt4_error == 131)
      return "ERR_INVALID_TRADE_VOLUME";
   if(mt4_error == 132)
      return "ERR_MARKET_CLOSED";
   if(mt4_error == 133)
      return "ERR_TRADE_DISABLED";
   if(mt4_error == 134)
      return "ERR_NOT_ENOUGH_MONEY";
   if(mt4_error == 136)
      return "ERR_OFF_QUOTES";
   if(mt4_error == 137)
      return "ERR_BROKER_BUSY";
   if(mt4_error == 138)
      return "ERR_REQUOTE";
   if(mt4_error == 146)
      return "ERR_TRADE_CONTEXT_BUSY";
   if(mt4_error == 4106)
      return "ERR_UNKNOWN_SYMBOL";
   if(mt4_error == 4108)
      return "ERR_INVALID_TICKET";
   return "ERR_COMMON";
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

string Ok()
{
   return "," + JsonInt("mt4_error", 0) + "," + JsonStr("error_message", "");
}

//--- commands -------------------------------------------------------------------------------------------

string Execute(const string line)
{
   string symbol = JsonGetString(line, "payload.symbol");
   string side = JsonGetString(line, "payload.side");
   double lots = JsonGetDouble(line, "payload.lot_size", 0);
   string comment = JsonGetString(line, "payload.comment");
   int magic = (int)JsonGetLong(line, "payload.magic_number", 0);
   int digits = (int)MarketInfo(symbol, MODE_DIGITS);
   double point = MarketInfo(symbol, MODE_POINT);
   if(point <= 0)
      return Failure("execution_result", line, "ERR_UNKNOWN_SYMBOL", 4106, "unknown symbol " + symbol);
   // an order of this trade already here (a repeat after this terminal lost its memory): that one is the result
   for(int i = 0; i < OrdersTotal(); i++)
      if(OrderSelect(i, SELECT_BY_POS, MODE_TRADES) && OrderComment() == comment && OrderMagicNumber() == magic)
         return JsonLine("execution_result", NowMs(), ResultHead(line, true, "NO_ERROR") + "," +
                         JsonInt("ticket", OrderTicket()) + "," + JsonNum("executed_price", OrderOpenPrice(), digits) +
                         "," + JsonNum("executed_lots", OrderLots(), 8) + "," + JsonInt("executed_at_ms", NowMs()) + Ok());
   RefreshRates();
   double bid = MarketInfo(symbol, MODE_BID);
   double ask = MarketInfo(symbol, MODE_ASK);
   if(bid <= 0 || ask <= 0)
      return Failure("execution_result", line, "ERR_OFF_QUOTES", 136, "off quotes: no prices for " + symbol);
   int type = OP_BUY;
   double price = ask;
   if(side == "SELL")
   {
      type = OP_SELL;
      price = bid;
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
      double slippage = MathAbs(price - JsonGetDouble(line, "payload.master_price", price)) / point;
      if(slippage > JsonGetDouble(line, "payload.max_slippage_points", 0) + 1e-9)
         return Failure("execution_result", line, "ERR_SLIPPAGE_TOO_HIGH", 0,
                        "not sent: price " + DoubleToString(price, digits) + " is " + DoubleToString(slippage, 1) +
                        " points from the master's");
   }
   double sl = JsonGetDouble(line, "payload.stop_loss", 0);
   double tp = JsonGetDouble(line, "payload.take_profit", 0);
   int ticket = OrderSend(symbol, type, lots, price, 10, sl, tp, comment, magic, 0, clrNONE);
   if(ticket < 0)
   {
      int err = GetLastError();
      if(err == 130 && (sl > 0 || tp > 0))
      {
         // stops too close for the broker: open without them (Core sets them by modify)
         ticket = OrderSend(symbol, type, lots, price, 10, 0, 0, comment, magic, 0, clrNONE);
         if(ticket < 0)
            err = GetLastError();
      }
      if(ticket < 0)
         return Failure("execution_result", line, ErrorCodeName(err), err, "OrderSend failed");
   }
   if(!OrderSelect(ticket, SELECT_BY_TICKET))
      return Failure("execution_result", line, "ERR_COMMON", 0, "order sent but not found");
   return JsonLine("execution_result", NowMs(), ResultHead(line, true, "NO_ERROR") + "," + JsonInt("ticket", ticket) +
                   "," + JsonNum("executed_price", OrderOpenPrice(), digits) + "," +
                   JsonNum("executed_lots", OrderLots(), 8) + "," + JsonInt("executed_at_ms", NowMs()) + Ok());
}

// The ticket MT4 gave the rest of a partially closed ticket ("from #TICKET"), or 0.
int Remainder(const int ticket)
{
   string mark = "from #" + IntegerToString(ticket);
   for(int i = 0; i < OrdersTotal(); i++)
      if(OrderSelect(i, SELECT_BY_POS, MODE_TRADES) && OrderComment() == mark)
         return OrderTicket();
   return 0;
}

string CloseResult(const string line, const int ticket, const double closed_lots, const double price, const int digits)
{
   int rest = Remainder(ticket);
   string members = ResultHead(line, true, "NO_ERROR") + "," + JsonInt("ticket", ticket) + "," +
                    JsonNum("closed_lots", closed_lots, 8) + "," + JsonNum("close_price", price, digits);
   if(rest > 0 && OrderSelect(rest, SELECT_BY_TICKET))
      members += "," + JsonInt("new_ticket", rest) + "," + JsonNum("remaining_lots", OrderLots(), 8);
   else
      members += "," + JsonNull("new_ticket") + "," + JsonNum("remaining_lots", 0, 1);
   return JsonLine("close_result", NowMs(), members + Ok());
}

string Close(const string line)
{
   int ticket = (int)JsonGetLong(line, "payload.ticket", 0);
   double lots = JsonGetDouble(line, "payload.lot_size", 0);
   if(!OrderSelect(ticket, SELECT_BY_TICKET))
      return Failure("close_result", line, "ERR_INVALID_TICKET", 4108, "no ticket " + IntegerToString(ticket));
   int digits = (int)MarketInfo(OrderSymbol(), MODE_DIGITS);
   if(OrderCloseTime() > 0)  // already closed (by an earlier close this terminal forgot): the history answers
      return CloseResult(line, ticket, OrderLots(), OrderClosePrice(), digits);
   RefreshRates();
   double price = MarketInfo(OrderSymbol(), MODE_BID);
   if(OrderType() == OP_SELL)
      price = MarketInfo(OrderSymbol(), MODE_ASK);
   if(lots > OrderLots())
      lots = OrderLots();
   if(!OrderClose(ticket, lots, price, 10, clrNONE))
   {
      int err = GetLastError();
      return Failure("close_result", line, ErrorCodeName(err), err, "OrderClose failed");
   }
   OrderSelect(ticket, SELECT_BY_TICKET);
   return CloseResult(line, ticket, lots, OrderClosePrice(), digits);
}

string Modify(const string line)
{
   int ticket = (int)JsonGetLong(line, "payload.ticket", 0);
   if(!OrderSelect(ticket, SELECT_BY_TICKET) || OrderCloseTime() > 0)
      return Failure("modify_result", line, "ERR_INVALID_TICKET", 4108, "no open ticket " + IntegerToString(ticket));
   int digits = (int)MarketInfo(OrderSymbol(), MODE_DIGITS);
   double sl = JsonGetDouble(line, "payload.stop_loss", 0);
   double tp = JsonGetDouble(line, "payload.take_profit", 0);
   if(!OrderModify(ticket, OrderOpenPrice(), sl, tp, 0, clrNONE))
   {
      int err = GetLastError();
      if(err != 1)
         return Failure("modify_result", line, ErrorCodeName(err), err, "OrderModify failed");
   }
   return JsonLine("modify_result", NowMs(), ResultHead(line, true, "NO_ERROR") + "," + JsonInt("ticket", ticket) +
                   "," + JsonPrice("stop_loss", sl, digits) + "," + JsonPrice("take_profit", tp, digits) + Ok());
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
      LinkWrite(g_ResultLines[known] + "\n");  // a repeat: the stored answer, nothing executed again
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
   LinkWrite(result);
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

//--- events -------------------------------------------------------------------------------------------------

int OnInit()
{
   g_Account = IntegerToString(AccountNumber());
   if(!LinkChoose(Transport, TcpPort))
   {
      Print("EchoSlave: Transport must be pipe or tcp (with TcpPort 1..65535), got ", Transport);
      return INIT_FAILED;
   }
   g_TerminalId = EchoTerminalId(IdentityFile, AccountNumber());
   LoadResults();
   EventSetMillisecondTimer(TimerMs);
   return INIT_SUCCEEDED;
}

void OnDeinit(const int reason)
{
   EventKillTimer();
   LinkClose();
}

void OnTimer()
{
   uint now = GetTickCount();
   if(!LinkConnected())
   {
      if(now - g_LastConnectTry < (uint)ReconnectMs && g_LastConnectTry != 0)
         return;
      g_LastConnectTry = now;
      if(!LinkOpen(PipeName, TcpPort) || !SendHandshake())
         return;
      Print("EchoSlave: connected to the Echo agent as ", g_Account);
      SendSnapshot();
      g_LastSnapshot = now;
   }
   string lines[];
   int n = LinkReadLines(lines);
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
