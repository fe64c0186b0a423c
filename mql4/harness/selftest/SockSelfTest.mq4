//+------------------------------------------------------------------+
//| SockSelfTest: runs Echo/Sock.mqh on commands from the test-suite (harness only, not an EA).      |
//| "open PORT", "read", "write TEXT", "close"; each answered with one line.                        |
//+------------------------------------------------------------------+
#property strict
#include <Echo/Sock.mqh>

void OnStart()
{
   string command;
   while(HarnessReadLine(command))
   {
      if(StringFind(command, "open ") == 0)
         HarnessWrite(SockOpen((int)StringToInteger(StringSubstr(command, 5))) ? "open" : "refused");
      else if(command == "read")
      {
         string lines[];
         int n = SockReadLines(lines);
         string out = IntegerToString(n) + (SockConnected() ? " connected" : " closed");
         for(int i = 0; i < n; i++)
            out += " " + lines[i];
         HarnessWrite(out);
      }
      else if(StringFind(command, "write ") == 0)
         HarnessWrite(SockWrite(StringSubstr(command, 6) + "\n") ? "written" : "broken");
      else if(command == "close")
      {
         SockClose();
         HarnessWrite(SockConnected() ? "connected" : "closed");
      }
      else
         HarnessWrite("unknown " + command);
   }
}
//+------------------------------------------------------------------+
