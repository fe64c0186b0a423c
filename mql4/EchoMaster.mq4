//+------------------------------------------------------------------+
//| EchoMaster: reports this account's trades to Echo (conformance/PROTOCOL.md, master role).        |
//| - watches its market orders every timer tick: a new one is a trade_intent (a trade_id and a      |
//|   trace_id are born here, once), changed SL/TP a trade_modify, a closed one a trade_close (a     |
//|   partial close names the ticket MT4 gives the remainder);                                      |
//| - keeps every event in a persistent queue (a file) until the Agent acknowledges it, re-sending   |
//|   with backoff per delivery_config, and after every reconnect;                                  |
//| - the trades it follows are kept in a file too, so a restarted terminal resumes them.            |
//+------------------------------------------------------------------+
#property strict
#property copyright "Echo"
#property version   "1.00"

#include <Echo/Json.mqh>
#include <Echo/Link.mqh>
#include <Echo/Identity.mqh>

input string Transport = "pipe";                      // how to reach the Agent: "pipe" (the named pipe) or "tcp" (127.0.0.1:TcpPort)
input string PipeName = "echo";                       // the Agent's pipe (\\.\pipe\NAME)
input int    TcpPort = 7701;                          // the Agent's agent.tcp_listen port (Transport = tcp)
input string SymbolMappings = "";                     // canonical:broker pairs, e.g. "GER30:DE30.cash,XAUUSD:XAUUSD.r"
input int    TimerMs = 10;                            // how often orders and the pipe are polled (timer events come at most every 10-16 ms)
input int    ReconnectMs = 1000;                      // wait between connection attempts
input int    HeartbeatMs = 2000;                      // heartbeat period
input string QueueFile = "echo_master_intents.jsonl"; // MQL4/Files: events not yet acknowledged
input string TradesFile = "echo_master_trades.txt";   // MQL4/Files: the trades being followed
input string IdentityFile = "echo_terminal_id.txt";   // MQL4/Files: this terminal's id (made once)
input string AgentToken = "";                         // the Agent's agent.token, if it has one

#define ECHO_PROTOCOL_VERSION 2
#define ECHO_SEMVER "1.0.0"

string g_Account = "";
string g_TerminalId = "";
uint   g_LastConnectTry = 0;
uint   g_LastHeartbeat = 0;
int    g_HeartbeatSeq = 0;
int    g_AckTimeoutMs = 1000;
int    g_BackoffMs = 500;
int    g_MaxRetries = 100;

// the trades being followed, by open ticket
int    g_Tickets[];
string g_TradeIds[];
string g_TraceIds[];
double g_Lots[];
double g_StopLoss[];
double g_TakeProfit[];

// the queue: one entry per event not acknowledged yet
string g_QueueKeys[];
string g_QueueTypes[];
string g_QueueMembers[];
int    g_QueueAttempts[];
uint   g_QueueDue[];

//--- ids --------------------------------------------------------------------------------------------------

long NowMs()
{
   return (long)TimeGMT() * 1000 + (long)(GetTickCount() % 1000);
}

string Hex(long value, const int digits)
{
   string alphabet = "0123456789abcdef";
   string out = "";
   for(int i = 0; i < digits; i++)
   {
      out = StringSubstr(alphabet, (int)(value % 16), 1) + out;
      value = value / 16;
   }
   return out;
}

string RandomHex(const int digits)
{
   string out = "";
   for(int i = 0; i < digits; i++)
      out += Hex(MathRand() % 16, 1);
   return out;
}

// A UUIDv7: 48 bits of Unix ms, version 7, variant 10, the rest random.
string NewUuid7()
{
   string t = Hex(NowMs(), 12);
   string variant = Hex(8 + MathRand() % 4, 1);
   return StringSubstr(t, 0, 8) + "-" + StringSubstr(t, 8, 4) + "-7" + RandomHex(3) + "-" + variant + RandomHex(3) + "-" +
          RandomHex(12);
}

string NewTraceId()
{
   string id = RandomHex(32);
   if(id == "00000000000000000000000000000000")
      id = "00000000000000000000000000000001";
   return id;
}

//--- the queue ----------------------------------------------------------------------------------------------

void SaveQueue()
{
   int h = FileOpen(QueueFile, FILE_WRITE | FILE_TXT | FILE_ANSI);
   if(h == INVALID_HANDLE)
   {
      Print("EchoMaster: cannot write ", QueueFile);
      return;
   }
   for(int i = 0; i < ArraySize(g_QueueKeys); i++)
      FileWriteString(h, g_QueueKeys[i] + "\t" + g_QueueTypes[i] + "\t" + IntegerToString(g_QueueAttempts[i]) + "\t" +
                      g_QueueMembers[i] + "\n");
   FileClose(h);
}

void Enqueue(const string key, const string type, const string members, const int attempts)
{
   int n = ArraySize(g_QueueKeys);
   ArrayResize(g_QueueKeys, n + 1);
   ArrayResize(g_QueueTypes, n + 1);
   ArrayResize(g_QueueMembers, n + 1);
   ArrayResize(g_QueueAttempts, n + 1);
   ArrayResize(g_QueueDue, n + 1);
   g_QueueKeys[n] = key;
   g_QueueTypes[n] = type;
   g_QueueMembers[n] = members;
   g_QueueAttempts[n] = attempts;
   g_QueueDue[n] = GetTickCount();
}

void Dequeue(const int index)
{
   int last = ArraySize(g_QueueKeys) - 1;
   for(int i = index; i < last; i++)
   {
      g_QueueKeys[i] = g_QueueKeys[i + 1];
      g_QueueTypes[i] = g_QueueTypes[i + 1];
      g_QueueMembers[i] = g_QueueMembers[i + 1];
      g_QueueAttempts[i] = g_QueueAttempts[i + 1];
      g_QueueDue[i] = g_QueueDue[i + 1];
   }
   ArrayResize(g_QueueKeys, last);
   ArrayResize(g_QueueTypes, last);
   ArrayResize(g_QueueMembers, last);
   ArrayResize(g_QueueAttempts, last);
   ArrayResize(g_QueueDue, last);
}

string Field(const string line, const int index)
{
   int start = 0;
   for(int i = 0; i < index; i++)
   {
      start = StringFind(line, "\t", start);
      if(start < 0)
         return "";
      start++;
   }
   if(index == 3)
      return StringSubstr(line, start);
   int end = StringFind(line, "\t", start);
   if(end < 0)
      return StringSubstr(line, start);
   return StringSubstr(line, start, end - start);
}

void LoadQueue()
{
   if(!FileIsExist(QueueFile))
      return;
   int h = FileOpen(QueueFile, FILE_READ | FILE_TXT | FILE_ANSI);
   if(h == INVALID_HANDLE)
      return;
   while(!FileIsEnding(h))
   {
      string line = FileReadString(h);
      if(StringLen(line) > 0)
         Enqueue(Field(line, 0), Field(line, 1), Field(line, 3), (int)StringToInteger(Field(line, 2)));
   }
   FileClose(h);
   Print("EchoMaster: ", ArraySize(g_QueueKeys), " unacknowledged events from the queue file");
}

// Send what is due; after max_retries sends an event waits for the next reconnect (it is never dropped).
void SendDue()
{
   uint now = GetTickCount();
   for(int i = 0; i < ArraySize(g_QueueKeys) && LinkConnected(); i++)
   {
      if(g_QueueAttempts[i] >= g_MaxRetries || (int)(now - g_QueueDue[i]) < 0)
         continue;
      g_QueueAttempts[i]++;
      string members = g_QueueMembers[i] + "," + JsonInt("attempt", g_QueueAttempts[i]);
      if(!LinkWrite(JsonLine(g_QueueTypes[i], NowMs(), members)))
         return;
      int shift = g_QueueAttempts[i] - 1;
      if(shift > 6)
         shift = 6;
      g_QueueDue[i] = now + (uint)(g_AckTimeoutMs + g_BackoffMs * (1 << shift));
      if(g_QueueAttempts[i] > 1)
         Print("EchoMaster: intent_retry ", g_QueueTypes[i], " ", g_QueueKeys[i], " attempt ", g_QueueAttempts[i]);
   }
}

//--- the trades followed ----------------------------------------------------------------------------------

int FindTicket(const int ticket, const int hint = 0)
{
   // hint: where to look first (the trades are followed in the order MT4 lists its orders, so a scan that
   // starts after the last one found finds the next at once); then the rest, wrapping around
   int n = ArraySize(g_Tickets);
   for(int k = 0; k < n; k++)
   {
      int i = (hint + k) % n;
      if(g_Tickets[i] == ticket)
         return i;
   }
   return -1;
}

void SaveTrades()
{
   int h = FileOpen(TradesFile, FILE_WRITE | FILE_TXT | FILE_ANSI);
   if(h == INVALID_HANDLE)
      return;
   for(int i = 0; i < ArraySize(g_Tickets); i++)
      FileWriteString(h, IntegerToString(g_Tickets[i]) + " " + g_TradeIds[i] + " " + g_TraceIds[i] + " " +
                      DoubleToString(g_Lots[i], 8) + " " + DoubleToString(g_StopLoss[i], 8) + " " +
                      DoubleToString(g_TakeProfit[i], 8) + "\n");
   FileClose(h);
}

void Follow(const int ticket, const string trade_id, const string trace_id, const double lots, const double sl,
            const double tp)
{
   int n = ArraySize(g_Tickets);
   ArrayResize(g_Tickets, n + 1);
   ArrayResize(g_TradeIds, n + 1);
   ArrayResize(g_TraceIds, n + 1);
   ArrayResize(g_Lots, n + 1);
   ArrayResize(g_StopLoss, n + 1);
   ArrayResize(g_TakeProfit, n + 1);
   g_Tickets[n] = ticket;
   g_TradeIds[n] = trade_id;
   g_TraceIds[n] = trace_id;
   g_Lots[n] = lots;
   g_StopLoss[n] = sl;
   g_TakeProfit[n] = tp;
}

void Unfollow(const int index)
{
   int last = ArraySize(g_Tickets) - 1;
   for(int i = index; i < last; i++)
   {
      g_Tickets[i] = g_Tickets[i + 1];
      g_TradeIds[i] = g_TradeIds[i + 1];
      g_TraceIds[i] = g_TraceIds[i + 1];
      g_Lots[i] = g_Lots[i + 1];
      g_StopLoss[i] = g_StopLoss[i + 1];
      g_TakeProfit[i] = g_TakeProfit[i + 1];
   }
   ArrayResize(g_Tickets, last);
   ArrayResize(g_TradeIds, last);
   ArrayResize(g_TraceIds, last);
   ArrayResize(g_Lots, last);
   ArrayResize(g_StopLoss, last);
   ArrayResize(g_TakeProfit, last);
}

void LoadTrades()
{
   if(!FileIsExist(TradesFile))
      return;
   int h = FileOpen(TradesFile, FILE_READ | FILE_TXT | FILE_ANSI);
   if(h == INVALID_HANDLE)
      return;
   while(!FileIsEnding(h))
   {
      string line = FileReadString(h);
      if(StringLen(line) == 0)
         continue;
      string parts[];
      int n = 0;
      int start = 0;
      while(start <= StringLen(line))
      {
         int space = StringFind(line, " ", start);
         if(space < 0)
            space = StringLen(line);
         ArrayResize(parts, n + 1);
         parts[n] = StringSubstr(line, start, space - start);
         n++;
         start = space + 1;
      }
      if(n >= 6)
         Follow((int)StringToInteger(parts[0]), parts[1], parts[2], StringToDouble(parts[3]), StringToDouble(parts[4]),
                StringToDouble(parts[5]));
   }
   FileClose(h);
}

//--- detecting changes ------------------------------------------------------------------------------------

string Side(const int type)
{
   if(type == OP_SELL)
      return "SELL";
   return "BUY";
}

void OnNewOrder()
{
   int digits = (int)MarketInfo(OrderSymbol(), MODE_DIGITS);
   string trade_id = NewUuid7();
   string trace_id = NewTraceId();
   string members = JsonStr("trade_id", trade_id) + "," + JsonStr("trace_id", trace_id) + "," +
                    JsonStr("symbol", OrderSymbol()) + "," + JsonStr("side", Side(OrderType())) + "," +
                    JsonNum("lot_size", OrderLots(), 8) + "," + JsonNum("price", OrderOpenPrice(), digits) + "," +
                    JsonInt("magic_number", OrderMagicNumber()) + "," + JsonInt("ticket", OrderTicket()) + "," +
                    JsonPrice("stop_loss", OrderStopLoss(), digits) + "," +
                    JsonPrice("take_profit", OrderTakeProfit(), digits) + "," +
                    JsonInt("opened_at_ms", (long)OrderOpenTime() * 1000);
   Follow(OrderTicket(), trade_id, trace_id, OrderLots(), OrderStopLoss(), OrderTakeProfit());
   Enqueue(trade_id, "trade_intent", members, 0);
}

void OnModified(const int index)
{
   int digits = (int)MarketInfo(OrderSymbol(), MODE_DIGITS);
   string event_id = NewUuid7();
   g_StopLoss[index] = OrderStopLoss();
   g_TakeProfit[index] = OrderTakeProfit();
   Enqueue(event_id, "trade_modify",
           JsonStr("event_id", event_id) + "," + JsonStr("trade_id", g_TradeIds[index]) + "," +
           JsonStr("trace_id", g_TraceIds[index]) + "," + JsonInt("ticket", OrderTicket()) + "," +
           JsonStr("symbol", OrderSymbol()) + "," + JsonInt("magic_number", OrderMagicNumber()) + "," +
           JsonPrice("stop_loss", OrderStopLoss(), digits) + "," + JsonPrice("take_profit", OrderTakeProfit(), digits), 0);
}

// g_Tickets[index] is no longer open: a full close, or a partial one (MT4 opened "from #TICKET").
void OnClosed(const int index)
{
   int ticket = g_Tickets[index];
   if(!OrderSelect(ticket, SELECT_BY_TICKET, MODE_HISTORY))
      return;
   int digits = (int)MarketInfo(OrderSymbol(), MODE_DIGITS);
   string event_id = NewUuid7();
   string members = JsonStr("event_id", event_id) + "," + JsonStr("trade_id", g_TradeIds[index]) + "," +
                    JsonStr("trace_id", g_TraceIds[index]) + "," + JsonInt("ticket", ticket) + "," +
                    JsonStr("symbol", OrderSymbol()) + "," + JsonNum("lot_size", OrderLots(), 8) + "," +
                    JsonNum("price", OrderClosePrice(), digits) + "," + JsonInt("magic_number", OrderMagicNumber());
   string mark = "from #" + IntegerToString(ticket);
   int rest = 0;
   double remaining = 0;
   for(int i = 0; i < OrdersTotal(); i++)
      if(OrderSelect(i, SELECT_BY_POS, MODE_TRADES) && OrderComment() == mark)
      {
         rest = OrderTicket();
         remaining = OrderLots();
      }
   members += "," + JsonNum("remaining_lots", remaining, 8);
   if(rest > 0)
   {
      members += "," + JsonInt("new_ticket", rest);
      g_Tickets[index] = rest;
      g_Lots[index] = remaining;
   }
   else
      Unfollow(index);
   Enqueue(event_id, "trade_close", members, 0);
}

bool Scan()
{
   // one pass over the open orders, and each followed trade looked up from where the last one was found:
   // linear in the orders on every tick, not quadratic (a grid master may hold hundreds)
   bool changed = false;
   int followed = ArraySize(g_Tickets);
   int seen[];  // 1: among the open orders
   ArrayResize(seen, followed);
   ArrayInitialize(seen, 0);
   int next = 0;
   for(int i = 0; i < OrdersTotal(); i++)
   {
      if(!OrderSelect(i, SELECT_BY_POS, MODE_TRADES) || (OrderType() != OP_BUY && OrderType() != OP_SELL))
         continue;
      int known = FindTicket(OrderTicket(), next);
      if(known < 0)
      {
         if(StringFind(OrderComment(), "from #") == 0)
            continue;  // a remainder: reported with its partial close
         OnNewOrder();  // followed from now on, after the trades this scan started with
         changed = true;
         continue;
      }
      next = known + 1;
      if(known < followed)
         seen[known] = 1;
      if(OrderStopLoss() != g_StopLoss[known] || OrderTakeProfit() != g_TakeProfit[known])
      {
         OnModified(known);
         changed = true;
      }
   }
   // a followed trade not among the open orders has closed; from the last, as a full close unfollows it
   for(int k = followed - 1; k >= 0; k--)
      if(seen[k] == 0)
      {
         OnClosed(k);
         changed = true;
      }
   return changed;
}

//--- receiving ------------------------------------------------------------------------------------------------

void OnAck(const string line)
{
   string key = JsonGetString(line, "payload.event_id");
   if(key == "")
      key = JsonGetString(line, "payload.trade_id");
   string status = JsonGetString(line, "payload.status");
   for(int i = 0; i < ArraySize(g_QueueKeys); i++)
   {
      if(g_QueueKeys[i] != key)
         continue;
      if(status == "OK" || status == "DUPLICATE" || status == "REJECTED")
      {
         if(status == "REJECTED")
            Print("EchoMaster: REJECTED ", g_QueueTypes[i], " ", key, ": ", JsonGetString(line, "payload.message"));
         Dequeue(i);
         SaveQueue();
      }
      else
         g_QueueDue[i] = GetTickCount() + (uint)g_BackoffMs;  // RETRY: again after the backoff
      return;
   }
}

void OnLine(const string line)
{
   string type = JsonGetString(line, "type");
   if(type == "trade_intent_ack")
      OnAck(line);
   else if(type == "delivery_config")
   {
      g_AckTimeoutMs = (int)JsonGetLong(line, "payload.ack_timeout_ms", g_AckTimeoutMs);
      g_BackoffMs = (int)JsonGetLong(line, "payload.retry_backoff_ms", g_BackoffMs);
      g_MaxRetries = (int)JsonGetLong(line, "payload.max_retries", g_MaxRetries);
   }
   else if(type == "symbol_registration_result")
      Print("EchoMaster: handshake ", JsonGetString(line, "payload.status"));
   else if(type == "error")
      Print("EchoMaster: agent error ", JsonGetString(line, "payload.code"), ": ", JsonGetString(line, "payload.message"));
}

string MappingsJson()
{
   string out = "";
   int start = 0;
   int n = StringLen(SymbolMappings);
   while(start < n)
   {
      int comma = StringFind(SymbolMappings, ",", start);
      if(comma < 0)
         comma = n;
      string pair = StringSubstr(SymbolMappings, start, comma - start);
      int colon = StringFind(pair, ":");
      if(colon > 0)
      {
         if(out != "")
            out += ",";
         // the input is canonical:broker; the handshake maps broker -> canonical
         out += JsonStr(StringSubstr(pair, colon + 1), StringSubstr(pair, 0, colon));
      }
      start = comma + 1;
   }
   return "{" + out + "}";
}

bool SendHandshake()
{
   return LinkWrite(JsonLine("handshake", NowMs(),
                             JsonStr("account_id", g_Account) + "," + JsonStr("role", "master") + "," +
                             JsonInt("protocol_version", ECHO_PROTOCOL_VERSION) + "," +
                             JsonStr("client_semver", ECHO_SEMVER) + "," + JsonStr("client_id", "master-" + g_Account) +
                             "," + EchoIdentityMembers(g_TerminalId, AgentToken) +
                             ",\"capabilities\":{\"features\":[\"intent_queue/v1\"],\"metrics\":[]}," +
                             "\"symbols\":[],\"symbol_mappings\":" + MappingsJson()));
}

//--- events -----------------------------------------------------------------------------------------------------

int OnInit()
{
   g_Account = IntegerToString(AccountNumber());
   if(!LinkChoose(Transport, TcpPort))
   {
      Print("EchoMaster: Transport must be pipe or tcp (with TcpPort 1..65535), got ", Transport);
      return INIT_FAILED;
   }
   g_TerminalId = EchoTerminalId(IdentityFile, AccountNumber());
   MathSrand(GetTickCount() + (uint)AccountNumber());
   LoadTrades();
   LoadQueue();
   EventSetMillisecondTimer(TimerMs);
   return INIT_SUCCEEDED;
}

void OnDeinit(const int reason)
{
   EventKillTimer();
   SaveQueue();
   SaveTrades();
   LinkClose();
}

void OnTimer()
{
   if(Scan())
   {
      SaveTrades();
      SaveQueue();
   }
   uint now = GetTickCount();
   if(!LinkConnected())
   {
      if(now - g_LastConnectTry < (uint)ReconnectMs && g_LastConnectTry != 0)
         return;
      g_LastConnectTry = now;
      if(!LinkOpen(PipeName, TcpPort) || !SendHandshake())
         return;
      Print("EchoMaster: connected to the Echo agent as ", g_Account);
      for(int i = 0; i < ArraySize(g_QueueKeys); i++)
      {
         if(g_QueueAttempts[i] >= g_MaxRetries)
            g_QueueAttempts[i] = g_MaxRetries - 1;  // a paused event gets one more send per reconnect
         g_QueueDue[i] = now;
      }
   }
   string lines[];
   int n = LinkReadLines(lines);
   for(int i = 0; i < n; i++)
      OnLine(lines[i]);
   SendDue();
   if(now - g_LastHeartbeat >= (uint)HeartbeatMs)
   {
      g_HeartbeatSeq++;
      LinkWrite(JsonLine("heartbeat", NowMs(), JsonInt("seq", g_HeartbeatSeq)));
      g_LastHeartbeat = now;
   }
}
//+------------------------------------------------------------------+
