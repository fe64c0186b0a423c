//+------------------------------------------------------------------+
//| Echo/Link.mqh: the EA's connection to the Agent, over its named pipe (Pipe.mqh) or its TCP port  |
//| (Sock.mqh), chosen once in OnInit (LinkChoose) from the EA's Transport input.                    |
//+------------------------------------------------------------------+
#property strict

#include <Echo/Pipe.mqh>
#include <Echo/Sock.mqh>

bool g_LinkTcp = false;

// "pipe" or "tcp" (any case); false for anything else, or a TCP port outside 1..65535.
bool LinkChoose(const string transport, const int port)
{
   string t = transport;
   StringToLower(t);
   if(t == "pipe")
   {
      g_LinkTcp = false;
      return true;
   }
   if(t == "tcp" && port > 0 && port < 65536)
   {
      g_LinkTcp = true;
      return true;
   }
   return false;
}

bool LinkConnected()
{
   return g_LinkTcp ? SockConnected() : PipeConnected();
}

bool LinkOpen(const string pipeName, const int port)
{
   return g_LinkTcp ? SockOpen(port) : PipeOpen(pipeName);
}

void LinkClose()
{
   if(g_LinkTcp)
      SockClose();
   else
      PipeClose();
}

bool LinkWrite(const string line)
{
   return g_LinkTcp ? SockWrite(line) : PipeWrite(line);
}

int LinkReadLines(string &lines[])
{
   return g_LinkTcp ? SockReadLines(lines) : PipeReadLines(lines);
}
//+------------------------------------------------------------------+
