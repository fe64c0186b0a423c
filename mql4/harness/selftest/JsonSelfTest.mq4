//+------------------------------------------------------------------+
//| JsonSelfTest: runs Echo/Json.mqh on requests from the test-suite (harness only, not an EA).      |
//| Each input line is COMMAND \t ARG \t ARG; each answer is one line.                              |
//+------------------------------------------------------------------+
#property strict
#include <Echo/Json.mqh>

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
   int end = StringFind(line, "\t", start);
   if(end < 0)
      return StringSubstr(line, start);
   return StringSubstr(line, start, end - start);
}

string FromHex(const string hex)
{
   string out = "";
   for(int i = 0; i + 1 < StringLen(hex); i += 2)
      out += ShortToString((ushort)JsonHexValue(StringSubstr(hex, i, 2)));
   return out;
}

void OnStart()
{
   string line;
   while(HarnessReadLine(line))
   {
      string command = Field(line, 0);
      string path = Field(line, 1);
      string json = Field(line, 2);
      if(command == "str")
         HarnessWrite(JsonGetString(json, path));
      else if(command == "raw")
         HarnessWrite(JsonGetRaw(json, path));
      else if(command == "kind")
         HarnessWrite(IntegerToString(JsonKind(json, path)));
      else if(command == "len")
         HarnessWrite(IntegerToString(JsonArrayLength(json, path)));
      else if(command == "num")
         HarnessWrite(DoubleToString(JsonGetDouble(json, path, -1.0), 6));
      else if(command == "esc")
         HarnessWrite(JsonEscape(FromHex(path)));
      else if(command == "line")
         HarnessWrite(JsonLine("trade_intent_ack", 1764063000006,
                               JsonStr("trade_id", path) + "," + JsonStr("status", "OK") + "," +
                               JsonNull("event_id") + "," + JsonNum("price", 2398.45, 2) + "," +
                               JsonInt("attempt", 3) + "," + JsonBool("ok", true)));
      else
         HarnessWrite("?");
   }
}
