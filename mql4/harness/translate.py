"""Translate an Echo MQL4 or MQL5 source (.mq4 / .mq5 / .mqh) into C++ that g++ compiles against the shim.

The EAs keep to a subset of MQL4 that is also C++ once a few MQL4-only forms are rewritten (see
``README.md`` next to this file): ``#property`` lines and ``#import`` blocks are dropped, ``input`` /
``extern`` become plain globals, ``#include <X>`` is inlined from ``mql4/Include``, dynamic and fixed
arrays (``T a[]``, ``T &a[]``, ``T a[N]``) become ``MqlArray<T>``, every top-level function gets a
prototype (MQL4 needs none; C++ does), which carries the default arguments, MQL4's 64-bit ``long`` and
``ulong`` become ``int64_t`` and ``uint64_t`` (C++ ``long`` is 32 bits on Windows), and calls to functions
imported from ``ws2_32.dll`` become calls to the shim's ``ws2_32_NAME`` (their POSIX namesakes
``socket``, ``connect``, ``send``, ``recv`` would clash). Anything outside the subset
(classes, templates, pointers, ``new``/``delete``, operator overloading, ``goto``, ``::``, datetime
literals) is refused with the file and line, so that what g++ accepts is also valid MQL4.

A ``.mq5`` source is MQL5: its ``#include <X>`` is looked up in ``mql5/Include`` and then in ``mql4/Include``
(the includes both languages share, such as ``Echo/Json.mqh``), the MQL5 trade types (``MqlTradeRequest``,
``MqlTradeResult``, ``ENUM_ORDER_TYPE_FILLING``...) are types, an Expert Advisor is linked with
``shim/mt5_terminal.hpp`` (the MT5 terminal: hedging positions, deals, retcodes, native sockets), and what
MQL5 does not have is refused with the file and line: ``#import`` (the MT5 EAs use no DLL) and MQL4's
trade and account calls (``MarketInfo``, ``OrderSelect``, ``AccountNumber``...).

Usage: ``python translate.py SOURCE.mq4 [-o OUT.cpp]``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INCLUDE_DIR = HERE.parent / "Include"
MQL5_INCLUDE_DIRS = (HERE.parents[1] / "mql5" / "Include", INCLUDE_DIR)
"""Where an MQL5 source's ``#include <X>`` is found: its own includes first, then the shared MQL4 ones."""
MQL5_TYPES = [
    "MqlTradeRequest",
    "MqlTradeResult",
    "ENUM_ORDER_TYPE",
    "ENUM_ORDER_TYPE_FILLING",
    "ENUM_TRADE_REQUEST_ACTIONS",
]
MQL4_ONLY = re.compile(
    r"\b(MarketInfo|OrderSelect|OrderTicket|OrderLots|OrderClose|OrderModify|OrderComment|OrderType|"
    r"OrderMagicNumber|OrderSymbol|OrderOpenPrice|OrderClosePrice|OrderCloseTime|OrderStopLoss|"
    r"OrderTakeProfit|OrderProfit|OrdersHistoryTotal|AccountNumber|AccountBalance|AccountEquity|"
    r"AccountMargin|AccountFreeMargin|AccountCurrency|AccountLeverage|RefreshRates)\s*\("
)
"""MQL4 calls that MQL5 does not have."""

BASE_TYPES = [
    "bool",
    "char",
    "uchar",
    "short",
    "ushort",
    "int",
    "uint",
    "long",
    "ulong",
    "double",
    "float",
    "string",
    "datetime",
    "color",
]
FORBIDDEN = [
    (re.compile(r"\bclass\b"), "classes"),
    (re.compile(r"\btemplate\b"), "templates"),
    (re.compile(r"\bnew\b|\bdelete\b"), "new/delete"),
    (re.compile(r"\bvirtual\b"), "virtual functions"),
    (re.compile(r"\boperator\b"), "operator overloading"),
    (re.compile(r"\bgoto\b"), "goto"),
    (re.compile(r"::"), "the scope operator ::"),
]
_DATETIME_LITERAL = re.compile(r"\bD'")
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_STRING_OR_CHAR = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')


DLL_PREFIXES = {"ws2_32.dll": "ws2_32_"}
"""DLLs whose imported functions the shim provides under a prefixed name."""
_WIDE_INTEGERS = re.compile(r"\b(u?)long\b")
_IMPORT_DLL = re.compile(r'#import\s+"([^"]+)"')
_IMPORTED_FUNCTION = re.compile(r"(\w+)\s*\(")


class TranslateError(Exception):
    pass


def _split_code(line: str) -> list[tuple[bool, str]]:
    """A line as (is_code, text) pieces: string and char literals are not rewritten."""
    out: list[tuple[bool, str]] = []
    pos = 0
    for m in _STRING_OR_CHAR.finditer(line):
        out.append((True, line[pos : m.start()]))
        out.append((False, m.group(0)))
        pos = m.end()
    out.append((True, line[pos:]))
    return out


def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments (outside literals), keeping line breaks so line numbers hold."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            m = _STRING_OR_CHAR.match(text, i)
            if m is None:
                raise TranslateError(f"unterminated literal at offset {i}")
            out.append(m.group(0))
            i = m.end()
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise TranslateError("unterminated /* comment")
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Translator:
    def __init__(self, mql5: bool = False) -> None:
        self.mql5 = mql5
        self.types = list(BASE_TYPES) + (MQL5_TYPES if mql5 else [])
        self.included: set[Path] = set()
        self.prototypes: list[str] = []
        self.renamed: dict[str, str] = {}
        self.dlls: set[str] = set()
        """The prefixed DLLs imported: the shim's ``NAME.hpp`` provides their functions."""

    def _type_re(self) -> str:
        return "|".join(sorted(self.types, key=len, reverse=True))

    def _rewrite_code(self, code: str) -> str:
        t = self._type_re()
        code = re.sub(rf"\b(const\s+)?({t})\s*&\s*(\w+)\s*\[\s*\]", r"\1MqlArray<\2> &\3", code)
        code = re.sub(rf"\b({t})\s+(\w+)\s*\[\s*\]", r"MqlArray<\1> \2", code)
        code = re.sub(rf"\b({t})\s+(\w+)\s*\[\s*(\w+)\s*\]", r"MqlArray<\1> \2(\3)", code)
        if self.renamed:
            names = "|".join(sorted(self.renamed, key=len, reverse=True))
            code = re.sub(rf"\b({names})(\s*\()", lambda m: self.renamed[m.group(1)] + m.group(2), code)
        return code

    def _system_include(self, name: str) -> Path:
        for folder in MQL5_INCLUDE_DIRS if self.mql5 else (INCLUDE_DIR,):
            if (folder / name).exists():
                return folder / name
        return INCLUDE_DIR / name

    def file(self, path: Path) -> str:
        path = path.resolve()
        if path in self.included:
            return ""
        self.included.add(path)
        text = _strip_comments(path.read_text(encoding="utf-8"))
        out: list[str] = []
        in_import = False
        prefix = ""
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{path.name}:{number}"
            stripped = line.strip()
            if stripped.startswith("#import") and self.mql5:
                raise TranslateError(f"{where}: #import is outside the Echo MQL5 subset (native calls only)")
            if stripped.startswith("#import"):
                in_import = not in_import and stripped != "#import"
                dll = _IMPORT_DLL.match(stripped)
                prefix = DLL_PREFIXES.get(dll.group(1).lower(), "") if in_import and dll else ""
                if prefix and dll:
                    self.dlls.add(dll.group(1).lower())
                continue
            if in_import:
                declared = _IMPORTED_FUNCTION.search(stripped)
                if prefix and declared:
                    self.renamed[declared.group(1)] = prefix + declared.group(1)
                continue
            if stripped.startswith("#property"):
                continue
            m = re.match(r'#include\s+[<"]([^>"]+)[>"]', stripped)
            if m:
                target = self._system_include(m.group(1)) if "<" in stripped else (path.parent / m.group(1))
                if not target.exists():
                    raise TranslateError(f"{where}: include {m.group(1)} not found")
                out.append(self.file(target))
                continue
            if _DATETIME_LITERAL.search(_DOUBLE_QUOTED.sub('""', line)):
                raise TranslateError(f"{where}: datetime literals are outside the Echo MQL4 subset")
            for is_code, piece in _split_code(line):
                if not is_code:
                    continue
                for pattern, what in FORBIDDEN:
                    if pattern.search(piece):
                        raise TranslateError(f"{where}: {what} are outside the Echo MQL4 subset")
                if re.search(rf"\b({self._type_re()})\s*\*\s*\w", piece):
                    raise TranslateError(f"{where}: pointers are outside the Echo MQL4 subset")
                old = MQL4_ONLY.search(piece) if self.mql5 else None
                if old:
                    raise TranslateError(f"{where}: {old.group(1)} is MQL4; MQL5 has no such function")
            s = re.match(r"\s*struct\s+(\w+)", line)
            if s:
                self.types.append(s.group(1))
            inp = re.match(r"^(\s*)(?:input|extern|sinput)\s+(\w+)\s+(\w+)\s*=\s*(.+?)\s*;\s*$", line)
            if inp:  # an input: its value may come from the environment, as from the EA's properties dialog
                pad, typ, name, default = inp.groups()
                line = f'{pad}{typ} {name} = ShimInput("{name}", ({typ})({default}));'
            line = re.sub(r"^(\s*)(input|extern|sinput)\s+", r"\1", line)
            line = "".join(self._rewrite_code(p) if c else p for c, p in _split_code(line))
            out.append(line)
        return "\n".join(out)

    def prototyped(self, code: str) -> str:
        """Give every top-level function a prototype (with its defaults), all placed before the first
        function definition, and drop the defaults from the definitions (C++ allows them once)."""
        t = self._type_re()
        head = re.compile(
            rf"^((?:static\s+)?(?:const\s+)?(?:void|{t}|MqlArray<\w+>)\s*&?\s+)(\w+)\s*\(([^)]*)\)(\s*\{{)",
            re.M,
        )

        def strip(params: str) -> str:
            return ",".join(p.split("=")[0].rstrip() for p in _split_params(params))

        def each(m: re.Match[str]) -> str:
            self.prototypes.append(f"{m.group(1)}{m.group(2)}({m.group(3)});")
            return f"{m.group(1)}{m.group(2)}({strip(m.group(3))}){m.group(4)}"

        first = head.search(code)
        if first is None:
            return code
        body = head.sub(each, code)
        cut = first.start()
        return body[:cut] + "\n".join(self.prototypes) + "\n\n" + body[cut:]


def _split_params(params: str) -> list[str]:
    out, depth, cur, quoted = [], 0, "", False
    for ch in params:
        if ch == '"' and not cur.endswith("\\"):
            quoted = not quoted
        if not quoted and ch in "(<":
            depth += 1
        elif not quoted and ch in ")>":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def _wide_integers(body: str) -> str:
    """MQL4's ``long`` / ``ulong`` (64 bits everywhere) as ``int64_t`` / ``uint64_t``, outside literals."""
    return "\n".join(
        "".join(_WIDE_INTEGERS.sub(r"\1int64_t", p) if c else p for c, p in _split_code(line))
        for line in body.split("\n")
    )


def translate(source: Path) -> str:
    mql5 = source.suffix.lower() == ".mq5"
    tr = Translator(mql5=mql5)
    body = _wide_integers(tr.prototyped(tr.file(source)))
    entry, header = "", "mt4.hpp"
    if re.search(r"\bint\s+OnInit\s*\(", body):  # an Expert Advisor: the terminal's event loop runs it
        entry = "\nint main() { return ShimRunEA(); }\n"
        header = "mt5_terminal.hpp" if mql5 else "mt4_terminal.hpp"
    elif re.search(r"\bvoid\s+OnStart\s*\(", body):  # a script
        entry = "\nint main() { OnStart(); return 0; }\n"
    dlls = "".join(f'#include "{dll.removesuffix(".dll")}.hpp"\n' for dll in sorted(tr.dlls))
    return (
        f"// Generated from {source.name} by mql4/harness/translate.py; "
        f"edit the MQL{5 if mql5 else 4} source instead.\n"
        f'#include "{header}"\n{dlls}\n' + body + entry
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("source", type=Path)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    try:
        cpp = translate(args.source)
    except (TranslateError, OSError) as exc:
        print(f"translate: {exc}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(cpp, encoding="utf-8")
    else:
        sys.stdout.write(cpp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
