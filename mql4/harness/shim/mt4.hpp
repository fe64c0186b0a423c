// The MT4 runtime the Echo EAs use, for g++: MQL4 types and the string, array, conversion and time
// functions of the subset documented in mql4/harness/README.md. The translator (translate.py) turns an
// MQL4 file into C++ that includes this header; behaviour follows the MQL4 reference.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

typedef long long datetime;
typedef int color;
typedef unsigned char uchar;
#ifdef _WIN32
typedef unsigned short ushort;
typedef unsigned int uint;
#else
// ushort and uint come from <sys/types.h> (glibc), with MQL4's sizes on x86-64
#endif

#define EMPTY_VALUE 2147483647
#define WHOLE_ARRAY -1
#define INIT_SUCCEEDED 0
#define INIT_FAILED 1

// MQL4 strings are UTF-16; the EAs only hold ASCII/UTF-8 protocol text, so bytes stand in for characters.
class string {
  public:
    std::string s;
    string() {}
    string(const char *c) : s(c ? c : "") {}
    string(const std::string &v) : s(v) {}
    string &operator+=(const string &o) { s += o.s; return *this; }
    string &operator+=(const char *o) { s += o; return *this; }
    bool operator==(const string &o) const { return s == o.s; }
    bool operator!=(const string &o) const { return s != o.s; }
    bool operator==(const char *o) const { return s == o; }
    bool operator!=(const char *o) const { return s != o; }
    bool operator<(const string &o) const { return s < o.s; }
};
inline string operator+(const string &a, const string &b) { return string(a.s + b.s); }
inline string operator+(const string &a, const char *b) { return string(a.s + b); }
inline string operator+(const char *a, const string &b) { return string(std::string(a) + b.s); }

template <typename T> class MqlArray {
  public:
    std::vector<T> v;
    MqlArray() {}
    explicit MqlArray(int n) : v(n > 0 ? n : 0) {}
    T &operator[](int i) { return v.at(static_cast<size_t>(i)); }
    const T &operator[](int i) const { return v.at(static_cast<size_t>(i)); }
};

template <typename T> int ArraySize(const MqlArray<T> &a) { return static_cast<int>(a.v.size()); }
template <typename T> int ArrayResize(MqlArray<T> &a, int n, int reserve = 0) {
    (void)reserve;
    if (n < 0) return -1;
    a.v.resize(static_cast<size_t>(n));
    return n;
}
template <typename T> void ArrayFree(MqlArray<T> &a) { a.v.clear(); }
template <typename T, typename V> int ArrayInitialize(MqlArray<T> &a, V value) {
    for (T &x : a.v) x = static_cast<T>(value);
    return static_cast<int>(a.v.size());
}
template <typename T>
int ArrayCopy(MqlArray<T> &dst, const MqlArray<T> &src, int dst_start = 0, int src_start = 0, int count = -1) {
    int n = static_cast<int>(src.v.size()) - src_start;
    if (count >= 0 && count < n) n = count;
    if (n <= 0) return 0;
    if (static_cast<int>(dst.v.size()) < dst_start + n) dst.v.resize(static_cast<size_t>(dst_start + n));
    for (int i = 0; i < n; i++) dst.v[static_cast<size_t>(dst_start + i)] = src.v[static_cast<size_t>(src_start + i)];
    return n;
}

inline int StringLen(const string &s) { return static_cast<int>(s.s.size()); }
inline bool StringToLower(string &s) {
    for (char &c : s.s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return true;
}
inline ushort StringGetCharacter(const string &s, int i) {
    if (i < 0 || i >= StringLen(s)) return 0;
    return static_cast<uchar>(s.s[static_cast<size_t>(i)]);
}
inline string StringSubstr(const string &s, int start, int length = -1) {
    if (start < 0) start = 0;
    if (start >= StringLen(s)) return string("");
    if (length < 0) return string(s.s.substr(static_cast<size_t>(start)));
    return string(s.s.substr(static_cast<size_t>(start), static_cast<size_t>(length)));
}
inline int StringFind(const string &s, const string &what, int start = 0) {
    if (start < 0) start = 0;
    size_t p = s.s.find(what.s, static_cast<size_t>(start));
    return p == std::string::npos ? -1 : static_cast<int>(p);
}
inline string ShortToString(ushort c) { return string(std::string(1, static_cast<char>(c))); }
inline string CharToString(uchar c) { return string(std::string(1, static_cast<char>(c))); }
inline string IntegerToString(long long v, int len = 0, ushort fill = ' ') {
    std::string r = std::to_string(v);
    while (static_cast<int>(r.size()) < len) r.insert(r.begin(), static_cast<char>(fill));
    return string(r);
}
inline string DoubleToString(double v, int digits = 8) {
    if (digits < 0 || digits > 16) digits = 8;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return string(buf);
}
inline double StringToDouble(const string &s) { return std::strtod(s.s.c_str(), nullptr); }
inline long long StringToInteger(const string &s) { return std::strtoll(s.s.c_str(), nullptr, 10); }
inline double MathAbs(double v) { return std::fabs(v); }
inline double MathPow(double b, double e) { return std::pow(b, e); }
inline double MathRound(double v) { return std::round(v); }
inline double MathFloor(double v) { return std::floor(v); }
inline double NormalizeDouble(double v, int digits) {
    double f = std::pow(10.0, digits);
    return std::round(v * f) / f;
}
inline int MathMax(int a, int b) { return a > b ? a : b; }
inline int MathMin(int a, int b) { return a < b ? a : b; }
inline void MathSrand(uint seed) { std::srand(seed); }
inline int MathRand() { return std::rand() % 32768; }
inline void Sleep(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
inline uint GetTickCount() {
    using namespace std::chrono;
    return static_cast<uint>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}
inline std::string ShimText(const string &s) { return s.s; }
inline std::string ShimText(const char *s) { return s; }
inline std::string ShimText(double v) { return DoubleToString(v, 8).s; }
inline std::string ShimText(int v) { return std::to_string(v); }
inline std::string ShimText(long long v) { return std::to_string(v); }
inline std::string ShimText(uint v) { return std::to_string(v); }
inline std::string ShimText(bool v) { return v ? "true" : "false"; }
// MQL4's Print takes any number of values and joins them.
template <typename... A> void Print(const A &...a) {
    std::string line;
    ((line += ShimText(a)), ...);
    std::fprintf(stderr, "%s\n", line.c_str());
}

// An EA input's value: ECHO_INPUT_<NAME> from the environment (the properties dialog), else its default.
inline const char *ShimInputText(const char *name) {
    std::string key = std::string("ECHO_INPUT_") + name;
    return std::getenv(key.c_str());
}
inline string ShimInput(const char *name, const string &d) {
    const char *v = ShimInputText(name);
    return v ? string(v) : d;
}
inline int ShimInput(const char *name, int d) {
    const char *v = ShimInputText(name);
    return v ? std::atoi(v) : d;
}
inline int64_t ShimInput(const char *name, int64_t d) {
    const char *v = ShimInputText(name);
    return v ? static_cast<int64_t>(std::strtoll(v, nullptr, 10)) : d;
}
inline double ShimInput(const char *name, double d) {
    const char *v = ShimInputText(name);
    return v ? std::atof(v) : d;
}
inline bool ShimInput(const char *name, bool d) {
    const char *v = ShimInputText(name);
    return v ? std::string(v) == "true" : d;
}

// --- strings <-> bytes --------------------------------------------------------------------------------
inline int StringToCharArray(const string &s, MqlArray<uchar> &a, int start = 0, int count = -1, uint cp = 0) {
    (void)cp;
    int n = count < 0 ? StringLen(s) : count;
    if (static_cast<int>(a.v.size()) < start + n) a.v.resize(static_cast<size_t>(start + n));
    for (int i = 0; i < n; i++) a.v[static_cast<size_t>(start + i)] = static_cast<uchar>(s.s[static_cast<size_t>(i)]);
    return n;
}
inline string CharArrayToString(const MqlArray<uchar> &a, int start = 0, int count = -1, uint cp = 0) {
    (void)cp;
    int n = count < 0 ? static_cast<int>(a.v.size()) - start : count;
    return string(std::string(reinterpret_cast<const char *>(a.v.data()) + start, static_cast<size_t>(n)));
}

// --- harness-only (not MQL4): line I/O for self-test scripts run by the test-suite ---------------------
#include <iostream>
inline bool HarnessReadLine(string &line) {
    std::string l;
    if (!std::getline(std::cin, l)) return false;
    line = string(l);
    return true;
}
inline void HarnessWrite(const string &s) { std::cout << s.s << '\n' << std::flush; }
