r"""Escaping of user text for every context it reaches in the emitted files.

Module paths, model class names and module reprs come from the user's model and may hold any
character: ``*/`` ends a C comment, a newline followed by ``#error`` is a preprocessor line, ``??/``
is a backslash (trigraph, active with ``-std=c99``), a trailing backslash splices two lines. Such
text reaches the emitted files only through one function per context:

* ``c_comment``: inside ``/* ... */`` on one line;
* ``c_string``: between the quotes of a C string literal (``SC_LAYER_BEGIN(0, "...")``);
* ``c_file_name``: a file name the generator writes and ``#include``s (checked, never rewritten);
* ``c_identifier_check``: an identifier (made by ``codegen.lower.c_identifier``; checked here).

Every one is the identity on ordinary names (letters, digits, ``. _ -``, spaces, and the
punctuation of module reprs such as ``Conv2d(1, 4, kernel_size=(3, 3))``), so escaping never
changes the files of an ordinary model. Characters outside printable ASCII, and the backslash, are
written ``<U+XXXX>``; ``*/``, ``/*`` and ``??`` are broken with a space; text longer than
``MAX_TEXT`` characters is cut (C99 only guarantees 4095-character string literals, and
``-pedantic`` warns above that).

The template environment (``codegen.emit.environment``) prints every value through
``template_value``: a value already escaped for its context is a ``CText`` and is printed as is;
any other string goes through ``c_text``, safe in both a comment and a string literal. A template
that forgets the filter therefore cannot inject code; ``tests/test_hardening.py`` also checks that
every template escapes user text explicitly.

>>> c_comment("features.0")
'features.0'
>>> c_comment("x */ return 7; /* y")
'x * / return 7; / * y'
>>> print(c_string('say "hi" \\ ??/'))
say \"hi\" <U+005C> \?\?/
"""

from __future__ import annotations

import re

from codegen.errors import CodegenError

MAX_TEXT = 200  # characters of user text kept in one comment or string literal

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAME_MAX = 255  # bytes of one path component on every common file system


class CText(str):
    """Text already escaped for the context a template prints it in (printed as is)."""

    __slots__ = ()


def _visible(text: object) -> str:
    s = str(text)
    if len(s) > MAX_TEXT:
        s = s[:MAX_TEXT] + "..."
    return "".join(ch if " " <= ch <= "~" and ch != "\\" else f"<U+{ord(ch):04X}>" for ch in s)


def _break(s: str, pairs: tuple[str, ...] = ("*/", "/*", "??")) -> str:
    while True:
        t = s
        for p in pairs:
            t = t.replace(p, f"{p[0]} {p[1]}")
        if t == s:
            return s
        s = t


def c_comment(text: object) -> CText:
    """``text`` made safe inside a one-line C block comment.

    No newline, no backslash, no ``*/`` or ``/*`` (neither inside nor formed with the comment's own
    ``/*`` ``*/`` around it), no trigraph.
    """
    s = _break(_visible(text))
    if s.startswith(("*", "/")):
        s = " " + s
    if s.endswith(("*", "/")):
        s += " "
    return CText(s)


def c_string(text: object) -> CText:
    """``text`` made safe between the double quotes of a C string literal.

    The string's value is ``text`` with characters outside printable ASCII and the backslash
    written ``<U+XXXX>`` (it is printed by line-oriented tools such as the board profiler, so it
    never holds a newline); ``"`` and ``?`` are escaped (no trigraph).
    """
    s = _visible(text).replace('"', '\\"').replace("?", "\\?")
    return CText(s)


def c_text(text: object) -> CText:
    """Text safe in a comment and in a string literal alike: what a template prints when it did
    not escape a string for its context."""
    return CText(_break(_visible(text).replace('"', "<U+0022>")))


def c_file_name(name: object) -> CText:
    """A file name the generator writes (``headers/<layer>.h``): letters, digits, ``_ . -``, not
    starting with ``.`` or ``-``, at most 255 bytes. Such names come from ``c_identifier``, so this
    only checks; anything else is a generator bug."""
    s = str(name)
    if not _FILE.fullmatch(s) or len(s) > _NAME_MAX:
        raise CodegenError(f"internal error: {s[:80]!r} is not a safe file name for the emitted directory")
    return CText(s)


def c_identifier_check(name: object) -> CText:
    """A C identifier made by ``codegen.lower.c_identifier`` (checked, never rewritten)."""
    s = str(name)
    if not _IDENT.fullmatch(s):
        raise CodegenError(f"internal error: {s[:80]!r} is not a C identifier")
    return CText(s)


def template_value(value: object) -> object:
    """The Jinja ``finalize`` hook: strings that are not ``CText`` are printed through ``c_text``."""
    if isinstance(value, str) and not isinstance(value, CText):
        return c_text(value)
    return value


FILTERS = {
    "c_comment": c_comment,
    "ccomment": c_comment,
    "c_string": c_string,
    "c_file": c_file_name,
    "c_ident": c_identifier_check,
}
