//+------------------------------------------------------------------+
//| Echo/Socket5.mqh: the Agent's TCP port (agent.tcp_listen) from an MT5 EA, on MQL5's own sockets |
//| (SocketCreate, SocketConnect, SocketIsReadable, SocketRead, SocketSend): no DLL. Reads never     |
//| wait: the timer takes what SocketIsReadable says has arrived. The terminal lets an EA connect    |
//| only to the hosts listed in Tools > Options > Expert Advisors, so 127.0.0.1 must be there.       |
//| Lines are JSON (conformance/PROTOCOL.md).                                                        |
//+------------------------------------------------------------------+

#define ECHO_SOCK5_HOST "127.0.0.1"
#define ECHO_SOCK5_CONNECT_MS 1000
#define ECHO_SOCK5_MAX_LINE 1048576
#define ECHO_SOCK5_NOT_ALLOWED 4014      // ERR_FUNCTION_NOT_ALLOWED: the host is not in the allowed list

int    g_Sock5 = INVALID_HANDLE;
string g_Sock5Buffer = "";
uchar  g_Sock5Bytes[];
int    g_Sock5LastError = 0;             // why the last connection attempt failed (0: it did not)

bool Sock5Connected()
{
   return g_Sock5 != INVALID_HANDLE;
}

// Connect to 127.0.0.1:port (the Agent on this machine); false when that fails, with the reason in
// g_Sock5LastError (ECHO_SOCK5_NOT_ALLOWED when 127.0.0.1 is not an allowed host).
bool Sock5Open(const int port)
{
   if(g_Sock5 != INVALID_HANDLE)
      return true;
   ResetLastError();
   int s = SocketCreate();
   if(s == INVALID_HANDLE)
   {
      g_Sock5LastError = GetLastError();
      return false;
   }
   if(!SocketConnect(s, ECHO_SOCK5_HOST, port, ECHO_SOCK5_CONNECT_MS))
   {
      g_Sock5LastError = GetLastError();
      SocketClose(s);
      return false;
   }
   g_Sock5LastError = 0;
   g_Sock5 = s;
   g_Sock5Buffer = "";
   return true;
}

void Sock5Close()
{
   if(g_Sock5 != INVALID_HANDLE)
      SocketClose(g_Sock5);
   g_Sock5 = INVALID_HANDLE;
   g_Sock5Buffer = "";
}

// Write one protocol line (it ends with "\n"); false when the connection broke (it is then closed).
bool Sock5Write(const string line)
{
   if(g_Sock5 == INVALID_HANDLE)
      return false;
   uchar bytes[];
   int n = StringToCharArray(line, bytes, 0, StringLen(line), CP_UTF8);
   if(SocketSend(g_Sock5, bytes, n) != n)
   {
      Sock5Close();
      return false;
   }
   return true;
}

// Read what has arrived (without waiting) and return the complete lines in lines[]; their count.
int Sock5ReadLines(string &lines[])
{
   ArrayResize(lines, 0);
   if(g_Sock5 == INVALID_HANDLE)
      return 0;
   if(!SocketIsConnected(g_Sock5))
   {
      Sock5Close();  // the Agent closed the connection
      return 0;
   }
   uint ready = SocketIsReadable(g_Sock5);
   while(ready > 0)
   {
      int got = SocketRead(g_Sock5, g_Sock5Bytes, ready, 10);
      if(got <= 0)
      {
         Sock5Close();
         return 0;
      }
      g_Sock5Buffer += CharArrayToString(g_Sock5Bytes, 0, got, CP_UTF8);
      ready = SocketIsReadable(g_Sock5);
   }
   int count = 0;
   int newline = StringFind(g_Sock5Buffer, "\n");
   while(newline >= 0)
   {
      ArrayResize(lines, count + 1);
      lines[count] = StringSubstr(g_Sock5Buffer, 0, newline);
      count++;
      g_Sock5Buffer = StringSubstr(g_Sock5Buffer, newline + 1);
      newline = StringFind(g_Sock5Buffer, "\n");
   }
   if(StringLen(g_Sock5Buffer) > ECHO_SOCK5_MAX_LINE)
      g_Sock5Buffer = "";  // a line this long is not ours: drop it rather than grow without bound
   return count;
}
//+------------------------------------------------------------------+
