"""The MQL4 -> C++ translator: what it rewrites, and the constructs outside the subset it refuses."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.mql4.harness_support import HARNESS, build

_spec = importlib.util.spec_from_file_location("translate", HARNESS / "translate.py")
assert _spec is not None and _spec.loader is not None
translate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(translate)


def source(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "T.mq4"
    p.write_text(text, encoding="utf-8")
    return p


def test_arrays_inputs_imports_and_prototypes_are_rewritten(tmp_path: Path) -> None:
    cpp = translate.translate(
        source(
            tmp_path,
            '#property strict\n#import "kernel32.dll"\nint CreateFileW(string a);\n#import\n'
            "input int Lots = 2; // lots\nstring names[];\n"
            "int Sum(const int &v[], int from = 0) { int s = 0;"
            " for(int i = from; i < ArraySize(v); i++) s += v[i]; return s; }\n"
            "void OnStart() { int a[3]; a[0] = 1; a[1] = 2; a[2] = Lots; ArrayResize(names, 1);"
            ' names[0] = "x"; HarnessWrite(IntegerToString(Sum(a)) + names[0]); }\n',
        )
    )
    assert "#property" not in cpp and "kernel32" not in cpp and "input " not in cpp
    assert "MqlArray<string> names;" in cpp and "MqlArray<int> a(3);" in cpp
    assert "int Sum(const MqlArray<int> &v, int from = 0);" in cpp  # the prototype keeps the default
    assert "int Sum(const MqlArray<int> &v, int from) {" in cpp  # the definition does not


def test_a_translated_program_runs(tmp_path: Path) -> None:
    src = source(
        tmp_path,
        "int Twice(int x = 21) { return x * 2; }\n"
        'void OnStart() { string s = "n=" + IntegerToString(Twice()); HarnessWrite(s); }\n',
    )
    exe = build(src, tmp_path)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout == "n=42\n"


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("class A { };", "classes"),
        ("template<typename T> T f(T x) { return x; }", "templates"),
        ("void f() { int *p = new int; }", "new/delete"),
        ("int *p;", "pointers"),
        ("void f() { goto end; end: ; }", "goto"),
        ('void f() { ::Print("x"); }', "scope operator"),
        ("datetime t = D'2024.01.01';", "datetime literals"),
    ],
)
def test_constructs_outside_the_subset_are_refused_with_file_and_line(
    tmp_path: Path, code: str, what: str
) -> None:
    with pytest.raises(translate.TranslateError, match=rf"T\.mq4:2: .*{what}"):
        translate.translate(source(tmp_path, "// line one\n" + code + "\n"))


def test_forbidden_words_inside_strings_and_comments_are_fine(tmp_path: Path) -> None:
    cpp = translate.translate(source(tmp_path, '// a class comment\nstring s = "new class :: goto";\n'))
    assert '"new class :: goto"' in cpp


def test_mql4_long_is_64_bits_on_every_platform(tmp_path: Path) -> None:
    """MQL4's ``long`` is 64 bits; C++ ``long`` is 32 on Windows (LLP64), where millisecond timestamps
    would wrap: the translator writes ``int64_t`` / ``uint64_t``, never ``long``."""
    src = source(
        tmp_path,
        "input long Step = 6;\n"
        "long Later(long ms, ulong step = 6) { return ms + (long)step; }\n"
        "long g_Stamps[];\n"
        'void OnStart() { string word = "long"; ulong big = 4294967296;'
        " ArrayResize(g_Stamps, 1); g_Stamps[0] = Later(1764063000000, (ulong)Step);"
        ' HarnessWrite(word + " " + IntegerToString(g_Stamps[0]) + " " + IntegerToString((long)big)); }\n',
    )
    cpp = translate.translate(src)
    code = cpp.split('#include "mt4.hpp"', 1)[1]
    assert "int64_t Later(int64_t ms, uint64_t step = 6);" in cpp
    assert "MqlArray<int64_t> g_Stamps;" in cpp and "(int64_t)step" in cpp
    assert '"long"' in code  # literals are left alone
    assert not re.search(r"\blong\b", code.replace('"long"', "")), "no C++ long is left"
    exe = build(src, tmp_path)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert out == "long 1764063000006 4294967296\n"
    env = {**os.environ, "ECHO_INPUT_Step": "4294967296"}  # an input beyond 32 bits, as set in the dialog
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, env=env).stdout
    assert out == "long 1768357967296 4294967296\n"


def test_ws2_32_imports_are_called_through_the_shim(tmp_path: Path) -> None:
    """Winsock's ``socket``/``connect``/``send``/``recv`` share names with POSIX's: calls to functions
    imported from ws2_32.dll become the shim's ``ws2_32_NAME``; other names, and kernel32's, stay."""
    cpp = translate.translate(
        source(
            tmp_path,
            '#import "ws2_32.dll"\nint send(int s, uchar &b[], int n, int f);\nint closesocket(int s);\n'
            '#import\n#import "kernel32.dll"\nbool CloseHandle(int h);\n#import\n'
            "void OnStart() { uchar b[]; int sent = send(3, b, 0, 0); closesocket(3); CloseHandle(4);"
            ' HarnessWrite("send(" + IntegerToString(sent)); }\n',
        )
    )
    assert '#include "ws2_32.hpp"' in cpp
    assert "int sent = ws2_32_send(3, b, 0, 0); ws2_32_closesocket(3); CloseHandle(4);" in cpp
    assert '"send("' in cpp
