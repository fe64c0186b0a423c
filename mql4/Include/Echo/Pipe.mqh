//+------------------------------------------------------------------+
//| Echo/Pipe.mqh: the Agent's named pipe from an EA, with kernel32 calls that never block: the     |
//| terminal's timer polls PeekNamedPipe and reads only what is there. Lines are JSON (PROTOCOL.md). |
//+------------------------------------------------------------------+
#property strict

#import "kernel32.dll"
int  CreateFileW(string name, uint access, uint share, int security, uint disposition, uint flags, int templ);
bool WriteFile(int handle, uchar &buffer[], uint bytes, uint &written, int overlapped);
bool ReadFile(int handle, uchar &buffer[], uint bytes, uint &read, int overlapped);
bool PeekNamedPipe(int handle, int buffer, uint size, int read, uint &available, int left);
bool CloseHandle(int handle);
#import

#define ECHO_PIPE_GENERIC_RW 0xC0000000
#define ECHO_PIPE_OPEN_EXISTING 3
#define ECHO_PIPE_MAX_LINE 1048576

int    g_PipeHandle = -1;
string g_PipeBuffer = "";
uchar  g_PipeBytes[];

bool PipeConnected()
{
   return g_PipeHandle != -1;
}

bool PipeOpen(const string name)
{
   if(g_PipeHandle != -1)
      return true;
   g_PipeHandle = CreateFileW("\\\\.\\pipe\\" + name, ECHO_PIPE_GENERIC_RW, 0, 0, ECHO_PIPE_OPEN_EXISTING, 0, 0);
   g_PipeBuffer = "";
   return g_PipeHandle != -1;
}

void PipeClose()
{
   if(g_PipeHandle != -1)
      CloseHandle(g_PipeHandle);
   g_PipeHandle = -1;
   g_PipeBuffer = "";
}

// Write one protocol line (it ends with "\n"); false when the pipe broke (it is then closed).
bool PipeWrite(const string line)
{
   if(g_PipeHandle == -1)
      return false;
   uchar bytes[];
   int n = StringToCharArray(line, bytes, 0, StringLen(line), 65001);
   uint written = 0;
   if(!WriteFile(g_PipeHandle, bytes, n, written, 0) || (int)written != n)
   {
      PipeClose();
      return false;
   }
   return true;
}

// Read what has arrived (without waiting) and return the complete lines in lines[]; their count.
int PipeReadLines(string &lines[])
{
   ArrayResize(lines, 0);
   if(g_PipeHandle == -1)
      return 0;
   uint available = 0;
   if(!PeekNamedPipe(g_PipeHandle, 0, 0, 0, available, 0))
   {
      PipeClose();
      return 0;
   }
   while(available > 0)
   {
      uint chunk = available;
      if(chunk > 65536)
         chunk = 65536;
      ArrayResize(g_PipeBytes, chunk);
      uint got = 0;
      if(!ReadFile(g_PipeHandle, g_PipeBytes, chunk, got, 0) || got == 0)
      {
         PipeClose();
         return 0;
      }
      g_PipeBuffer += CharArrayToString(g_PipeBytes, 0, got, 65001);
      available -= got;
   }
   int count = 0;
   int newline = StringFind(g_PipeBuffer, "\n");
   while(newline >= 0)
   {
      ArrayResize(lines, count + 1);
      lines[count] = StringSubstr(g_PipeBuffer, 0, newline);
      count++;
      g_PipeBuffer = StringSubstr(g_PipeBuffer, newline + 1);
      newline = StringFind(g_PipeBuffer, "\n");
   }
   if(StringLen(g_PipeBuffer) > ECHO_PIPE_MAX_LINE)
      g_PipeBuffer = "";  // a line this long is not ours: drop it rather than grow without bound
   return count;
}
//+------------------------------------------------------------------+
