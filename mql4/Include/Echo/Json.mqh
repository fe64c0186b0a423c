//+------------------------------------------------------------------+
//| Echo/Json.mqh: the JSON the EA protocol needs (conformance/PROTOCOL.md), in the Echo MQL4 subset. |
//| Building: JsonStr/JsonNum/JsonInt/JsonBool/JsonNull give `"key":value` members to join with ",". |
//| Reading: JsonGet* look a value up by path ("payload.command_id", "payload.symbols[1].digits")    |
//| in a line without building a tree: the line is scanned, values are skipped, nothing allocated.  |
//+------------------------------------------------------------------+
#property strict

#define JSON_NONE 0
#define JSON_STRING 1
#define JSON_NUMBER 2
#define JSON_OBJECT 3
#define JSON_ARRAY 4
#define JSON_TRUE 5
#define JSON_FALSE 6
#define JSON_NULL 7

//--- building ----------------------------------------------------------------------------------------

string JsonEscape(const string value)
{
   string out = "";
   int n = StringLen(value);
   for(int i = 0; i < n; i++)
   {
      ushort c = StringGetCharacter(value, i);
      if(c == '"')
         out += "\\\"";
      else if(c == '\\')
         out += "\\\\";
      else if(c == '\n')
         out += "\\n";
      else if(c == '\r')
         out += "\\r";
      else if(c == '\t')
         out += "\\t";
      else if(c < 32)
         out += "\\u00" + JsonHexByte(c);
      else
         out += ShortToString(c);
   }
   return out;
}

string JsonHexByte(const ushort c)
{
   string digits = "0123456789abcdef";
   return StringSubstr(digits, (c >> 4) & 15, 1) + StringSubstr(digits, c & 15, 1);
}

string JsonStr(const string key, const string value)
{
   return "\"" + key + "\":\"" + JsonEscape(value) + "\"";
}

string JsonNum(const string key, const double value, const int digits)
{
   return "\"" + key + "\":" + DoubleToString(value, digits);
}

string JsonInt(const string key, const long value)
{
   return "\"" + key + "\":" + IntegerToString(value);
}

string JsonBool(const string key, const bool value)
{
   if(value)
      return "\"" + key + "\":true";
   return "\"" + key + "\":false";
}

string JsonNull(const string key)
{
   return "\"" + key + "\":null";
}

// A price or SL/TP: null when zero (MT4's "no level").
string JsonPrice(const string key, const double value, const int digits)
{
   if(value == 0.0)
      return JsonNull(key);
   return JsonNum(key, value, digits);
}

// One protocol line: {"type":..,"timestamp_ms":..,"payload":{members}} and its newline.
string JsonLine(const string type, const long timestamp_ms, const string members)
{
   return "{\"type\":\"" + type + "\",\"timestamp_ms\":" + IntegerToString(timestamp_ms) +
          ",\"payload\":{" + members + "}}\n";
}

//--- scanning ----------------------------------------------------------------------------------------

int JsonSkipSpace(const string json, int pos)
{
   int n = StringLen(json);
   while(pos < n)
   {
      ushort c = StringGetCharacter(json, pos);
      if(c != ' ' && c != '\t' && c != '\n' && c != '\r')
         break;
      pos++;
   }
   return pos;
}

int JsonKindAt(const string json, const int pos)
{
   ushort c = StringGetCharacter(json, pos);
   if(c == '"')
      return JSON_STRING;
   if(c == '{')
      return JSON_OBJECT;
   if(c == '[')
      return JSON_ARRAY;
   if(c == 't')
      return JSON_TRUE;
   if(c == 'f')
      return JSON_FALSE;
   if(c == 'n')
      return JSON_NULL;
   if(c == '-' || (c >= '0' && c <= '9'))
      return JSON_NUMBER;
   return JSON_NONE;
}

// The position just after the string starting at pos (a '"'), or -1.
int JsonSkipString(const string json, int pos)
{
   int n = StringLen(json);
   pos++;
   while(pos < n)
   {
      ushort c = StringGetCharacter(json, pos);
      if(c == '\\')
         pos += 2;
      else if(c == '"')
         return pos + 1;
      else
         pos++;
   }
   return -1;
}

// The position just after the value starting at pos, or -1 for malformed input.
int JsonSkipValue(const string json, int pos)
{
   int n = StringLen(json);
   pos = JsonSkipSpace(json, pos);
   if(pos >= n)
      return -1;
   int kind = JsonKindAt(json, pos);
   if(kind == JSON_STRING)
      return JsonSkipString(json, pos);
   if(kind == JSON_OBJECT || kind == JSON_ARRAY)
   {
      int depth = 0;
      while(pos < n)
      {
         ushort c = StringGetCharacter(json, pos);
         if(c == '"')
         {
            pos = JsonSkipString(json, pos);
            if(pos < 0)
               return -1;
            continue;
         }
         if(c == '{' || c == '[')
            depth++;
         else if(c == '}' || c == ']')
         {
            depth--;
            if(depth == 0)
               return pos + 1;
         }
         pos++;
      }
      return -1;
   }
   if(kind == JSON_NONE)
      return -1;
   while(pos < n)
   {
      ushort c = StringGetCharacter(json, pos);
      if(c == ',' || c == '}' || c == ']' || c == ' ' || c == '\n' || c == '\r' || c == '\t')
         break;
      pos++;
   }
   return pos;
}

// In the object starting at pos, the position of the value of key, or -1.
int JsonFindKey(const string json, int pos, const string key)
{
   int n = StringLen(json);
   pos = JsonSkipSpace(json, pos);
   if(pos >= n || StringGetCharacter(json, pos) != '{')
      return -1;
   pos++;
   while(pos < n)
   {
      pos = JsonSkipSpace(json, pos);
      if(pos >= n)
         return -1;
      if(StringGetCharacter(json, pos) == '}')
         return -1;
      if(StringGetCharacter(json, pos) != '"')
         return -1;
      int end = JsonSkipString(json, pos);
      if(end < 0)
         return -1;
      string name = StringSubstr(json, pos + 1, end - pos - 2);
      pos = JsonSkipSpace(json, end);
      if(pos >= n || StringGetCharacter(json, pos) != ':')
         return -1;
      pos = JsonSkipSpace(json, pos + 1);
      if(name == key)
         return pos;
      pos = JsonSkipValue(json, pos);
      if(pos < 0)
         return -1;
      pos = JsonSkipSpace(json, pos);
      if(pos < n && StringGetCharacter(json, pos) == ',')
         pos++;
   }
   return -1;
}

// In the array starting at pos, the position of element index, or -1.
int JsonFindIndex(const string json, int pos, const int index)
{
   int n = StringLen(json);
   pos = JsonSkipSpace(json, pos);
   if(pos >= n || StringGetCharacter(json, pos) != '[')
      return -1;
   pos = JsonSkipSpace(json, pos + 1);
   if(pos < n && StringGetCharacter(json, pos) == ']')
      return -1;
   for(int i = 0; pos < n; i++)
   {
      pos = JsonSkipSpace(json, pos);
      if(i == index)
         return pos;
      pos = JsonSkipValue(json, pos);
      if(pos < 0)
         return -1;
      pos = JsonSkipSpace(json, pos);
      if(pos >= n || StringGetCharacter(json, pos) != ',')
         return -1;
      pos++;
   }
   return -1;
}

// The position of the value at path ("payload.symbols[1].digits"), or -1 when it is not there.
int JsonFind(const string json, const string path)
{
   int pos = JsonSkipSpace(json, 0);
   int n = StringLen(path);
   int i = 0;
   while(i < n && pos >= 0)
   {
      ushort c = StringGetCharacter(path, i);
      if(c == '.')
      {
         i++;
         continue;
      }
      if(c == '[')
      {
         int close = StringFind(path, "]", i);
         if(close < 0)
            return -1;
         int index = (int)StringToInteger(StringSubstr(path, i + 1, close - i - 1));
         pos = JsonFindIndex(json, pos, index);
         i = close + 1;
         continue;
      }
      int end = i;
      while(end < n && StringGetCharacter(path, end) != '.' && StringGetCharacter(path, end) != '[')
         end++;
      pos = JsonFindKey(json, pos, StringSubstr(path, i, end - i));
      i = end;
   }
   return pos;
}

int JsonKind(const string json, const string path)
{
   int pos = JsonFind(json, path);
   if(pos < 0)
      return JSON_NONE;
   return JsonKindAt(json, pos);
}

bool JsonHas(const string json, const string path)
{
   return JsonFind(json, path) >= 0;
}

// The text of a string value with its escapes decoded (\uXXXX below 0x80 only); "" when absent.
string JsonGetString(const string json, const string path)
{
   int pos = JsonFind(json, path);
   if(pos < 0 || JsonKindAt(json, pos) != JSON_STRING)
      return "";
   int end = JsonSkipString(json, pos);
   if(end < 0)
      return "";
   string out = "";
   for(int i = pos + 1; i < end - 1; i++)
   {
      ushort c = StringGetCharacter(json, i);
      if(c != '\\')
      {
         out += ShortToString(c);
         continue;
      }
      i++;
      ushort e = StringGetCharacter(json, i);
      if(e == 'n')
         out += "\n";
      else if(e == 'r')
         out += "\r";
      else if(e == 't')
         out += "\t";
      else if(e == 'b')
         out += ShortToString(8);
      else if(e == 'f')
         out += ShortToString(12);
      else if(e == 'u')
      {
         int code = (int)JsonHexValue(StringSubstr(json, i + 1, 4));
         if(code >= 0 && code < 128)
            out += ShortToString((ushort)code);
         else
            out += "?";
         i += 4;
      }
      else
         out += ShortToString(e);
   }
   return out;
}

long JsonHexValue(const string hex)
{
   long v = 0;
   int n = StringLen(hex);
   for(int i = 0; i < n; i++)
   {
      ushort c = StringGetCharacter(hex, i);
      int d = -1;
      if(c >= '0' && c <= '9')
         d = c - '0';
      else if(c >= 'a' && c <= 'f')
         d = c - 'a' + 10;
      else if(c >= 'A' && c <= 'F')
         d = c - 'A' + 10;
      if(d < 0)
         return -1;
      v = v * 16 + d;
   }
   return v;
}

// The raw text of a scalar value (a number, true, false, null); "" when absent or not a scalar.
string JsonGetRaw(const string json, const string path)
{
   int pos = JsonFind(json, path);
   if(pos < 0)
      return "";
   int kind = JsonKindAt(json, pos);
   if(kind == JSON_OBJECT || kind == JSON_ARRAY || kind == JSON_STRING || kind == JSON_NONE)
      return "";
   int end = JsonSkipValue(json, pos);
   if(end < 0)
      return "";
   return StringSubstr(json, pos, end - pos);
}

double JsonGetDouble(const string json, const string path, const double fallback)
{
   if(JsonKind(json, path) != JSON_NUMBER)
      return fallback;
   return StringToDouble(JsonGetRaw(json, path));
}

long JsonGetLong(const string json, const string path, const long fallback)
{
   if(JsonKind(json, path) != JSON_NUMBER)
      return fallback;
   return StringToInteger(JsonGetRaw(json, path));
}

bool JsonGetBool(const string json, const string path, const bool fallback)
{
   int kind = JsonKind(json, path);
   if(kind == JSON_TRUE)
      return true;
   if(kind == JSON_FALSE)
      return false;
   return fallback;
}

int JsonArrayLength(const string json, const string path)
{
   int pos = JsonFind(json, path);
   if(pos < 0 || JsonKindAt(json, pos) != JSON_ARRAY)
      return 0;
   int count = 0;
   while(JsonFindIndex(json, pos, count) >= 0)
      count++;
   return count;
}
//+------------------------------------------------------------------+
