//+------------------------------------------------------------------+
//| Echo/Identity.mqh: this terminal's identity (conformance/PROTOCOL.md 5.5). 32 random hex         |
//| characters, generated the first time and kept in a file of the terminal's files folder, then     |
//| presented in every handshake: a restarted terminal proves it is the one that holds its account's |
//| connection. The Agent's access control is its owner-only socket and agent.token, not this id.    |
//+------------------------------------------------------------------+
#property strict

#define ECHO_TERMINAL_ID_LEN 32

bool EchoTerminalIdValid(const string id)
{
   int n = StringLen(id);
   if(n < 16 || n > 64)
      return false;
   for(int i = 0; i < n; i++)
   {
      ushort c = StringGetCharacter(id, i);
      bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
      if(!ok)
         return false;
   }
   return true;
}

// The id kept in `file` (the terminal's Files folder), or a new one written there; `account` (the login)
// only seeds the generator, so that MQL4 and MQL5 EAs share this file.
string EchoTerminalId(const string file, const long account)
{
   if(FileIsExist(file))
   {
      int r = FileOpen(file, FILE_READ | FILE_TXT | FILE_ANSI);
      if(r != INVALID_HANDLE)
      {
         string kept = FileReadString(r);
         FileClose(r);
         if(EchoTerminalIdValid(kept))
            return kept;
         Print("Echo: ", file, " does not hold a terminal id; a new one replaces it");
      }
   }
   string hex = "0123456789abcdef";
   string id = "";
   uint seed = GetTickCount() ^ (uint)TimeGMT() ^ ((uint)account * 2654435761);
   for(int i = 0; i < ECHO_TERMINAL_ID_LEN; i++)
   {
      if(i % 4 == 0)
      {
         seed = seed * 1664525 + 1013904223 + GetTickCount();
         MathSrand(seed ^ (uint)MathRand());
      }
      id += StringSubstr(hex, MathRand() % 16, 1);
   }
   int w = FileOpen(file, FILE_WRITE | FILE_TXT | FILE_ANSI);
   if(w == INVALID_HANDLE)
      Print("Echo: cannot write ", file, "; the terminal id lasts until the EA stops");
   else
   {
      FileWriteString(w, id + "\n");
      FileClose(w);
   }
   return id;
}

// The handshake members that identify the terminal and present the Agent's token (if it has one).
string EchoIdentityMembers(const string terminal_id, const string token)
{
   string out = JsonStr("terminal_id", terminal_id);
   if(token != "")
      out += "," + JsonStr("token", token);
   return out;
}
