//+------------------------------------------------------------------+
//| Echo/Sock.mqh: the Agent's TCP port (agent.tcp_listen) from an EA, on ws2_32.dll, with the same  |
//| API as Pipe.mqh. The socket is non-blocking once connected: the terminal's timer reads only what |
//| has arrived, and no call waits on the Agent. For terminals whose named pipes cannot reach the    |
//| Agent (MT4 under Wine on Linux, where Winsock is the host's sockets). Lines are JSON (PROTOCOL.md).|
//+------------------------------------------------------------------+
#property strict

// SOCKET is pointer-sized: 32 bits in MT4's terminal (the declarations below), 64 bits in a 64-bit build.
// The handle is kept in a long, so no bits are lost in either.
#import "ws2_32.dll"
int  WSAStartup(ushort version, uchar &data[]);
int  socket(int af, int type, int protocol);
int  connect(int s, uchar &address[], int length);
int  send(int s, uchar &buffer[], int length, int flags);
int  recv(int s, uchar &buffer[], int length, int flags);
int  ioctlsocket(int s, uint command, uint &argument);
int  closesocket(int s);
int  WSAGetLastError();
#import

#define ECHO_SOCK_AF_INET 2
#define ECHO_SOCK_STREAM 1
#define ECHO_SOCK_IPPROTO_TCP 6
#define ECHO_SOCK_FIONBIO 0x8004667E
#define ECHO_SOCK_WOULDBLOCK 10035
#define ECHO_SOCK_CHUNK 65536
#define ECHO_SOCK_MAX_LINE 1048576
#define ECHO_SOCK_SEND_WAIT_MS 2000

long   g_SockHandle = -1;
bool   g_SockStarted = false;
string g_SockBuffer = "";
uchar  g_SockBytes[];

bool SockConnected()
{
   return g_SockHandle != -1;
}

// Connect to 127.0.0.1:port (the Agent on this machine); false when nobody listens there.
bool SockOpen(const int port)
{
   if(g_SockHandle != -1)
      return true;
   if(!g_SockStarted)
   {
      uchar wsadata[512];  // WSADATA (400 bytes in a 64-bit build)
      if(WSAStartup(0x0202, wsadata) != 0)
         return false;
      g_SockStarted = true;
   }
   long s = socket(ECHO_SOCK_AF_INET, ECHO_SOCK_STREAM, ECHO_SOCK_IPPROTO_TCP);
   if(s == -1 || s == 4294967295)  // INVALID_SOCKET
      return false;
   uchar address[16];  // sockaddr_in: family, port (network order), 127.0.0.1, zero padding
   ArrayInitialize(address, 0);
   address[0] = ECHO_SOCK_AF_INET;
   address[2] = (uchar)((port >> 8) & 255);
   address[3] = (uchar)(port & 255);
   address[4] = 127;
   address[7] = 1;
   // a loopback connect is answered at once (accepted by the kernel, or refused)
   if(connect(s, address, 16) != 0)
   {
      closesocket(s);
      return false;
   }
   uint nonblocking = 1;
   if(ioctlsocket(s, ECHO_SOCK_FIONBIO, nonblocking) != 0)
   {
      closesocket(s);
      return false;
   }
   g_SockHandle = s;
   g_SockBuffer = "";
   return true;
}

void SockClose()
{
   if(g_SockHandle != -1)
      closesocket(g_SockHandle);
   g_SockHandle = -1;
   g_SockBuffer = "";
}

// Write one protocol line (it ends with "\n"); false when the connection broke (it is then closed). A full
// send buffer (the Agent not reading) is waited on for at most ECHO_SOCK_SEND_WAIT_MS.
bool SockWrite(const string line)
{
   if(g_SockHandle == -1)
      return false;
   uchar bytes[];
   int n = StringToCharArray(line, bytes, 0, StringLen(line), 65001);
   int done = 0;
   uint since = GetTickCount();
   while(done < n)
   {
      uchar rest[];
      ArrayCopy(rest, bytes, 0, done, n - done);
      int sent = send(g_SockHandle, rest, n - done, 0);
      if(sent > 0)
      {
         done += sent;
         continue;
      }
      if(sent < 0 && WSAGetLastError() == ECHO_SOCK_WOULDBLOCK && GetTickCount() - since < ECHO_SOCK_SEND_WAIT_MS)
      {
         Sleep(1);
         continue;
      }
      SockClose();
      return false;
   }
   return true;
}

// Read what has arrived (without waiting) and return the complete lines in lines[]; their count.
int SockReadLines(string &lines[])
{
   ArrayResize(lines, 0);
   if(g_SockHandle == -1)
      return 0;
   ArrayResize(g_SockBytes, ECHO_SOCK_CHUNK);
   while(true)
   {
      int got = recv(g_SockHandle, g_SockBytes, ECHO_SOCK_CHUNK, 0);
      if(got > 0)
      {
         g_SockBuffer += CharArrayToString(g_SockBytes, 0, got, 65001);
         if(got < ECHO_SOCK_CHUNK)
            break;
         continue;
      }
      if(got < 0 && WSAGetLastError() == ECHO_SOCK_WOULDBLOCK)
         break;  // nothing more for now
      SockClose();  // 0: the Agent closed the connection; otherwise an error
      return 0;
   }
   int count = 0;
   int newline = StringFind(g_SockBuffer, "\n");
   while(newline >= 0)
   {
      ArrayResize(lines, count + 1);
      lines[count] = StringSubstr(g_SockBuffer, 0, newline);
      count++;
      g_SockBuffer = StringSubstr(g_SockBuffer, newline + 1);
      newline = StringFind(g_SockBuffer, "\n");
   }
   if(StringLen(g_SockBuffer) > ECHO_SOCK_MAX_LINE)
      g_SockBuffer = "";  // a line this long is not ours: drop it rather than grow without bound
   return count;
}
//+------------------------------------------------------------------+
