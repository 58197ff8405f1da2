"""postgresql.conf's tokens as PostgreSQL's ``guc-file.l`` reads them, and values written so that PostgreSQL
reads them back.

A line is ``name [=] value [# comment]`` where the name is an identifier or ``a.b``, and the value is a single
identifier, unquoted string (letters first, then letters, digits and ``-._:/``), integer with optional
unit letters, real, or a single-quoted string with ``''`` or backslash escapes (checked against a
PostgreSQL 15 server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# flex's LETTER is [A-Za-z_\200-\377] on bytes; on text decoded from UTF-8 (with surrogateescape) that is
# every non-ASCII character. Written as negated ASCII sets: a class spanning \u0080-\U0010ffff takes the
# regex compiler tens of milliseconds at every start-up, these take microseconds.
_L = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Za-z_ and non-ASCII
_LD = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Za-z_0-9 and non-ASCII
_UNQUOTED_TAIL = r"[^\x00-\x2c\x3b-\x40\x5b-\x5e\x60\x7b-\x7f]"  # the same and -./:
_ID = f"{_L}{_LD}*"

# One entry per flex rule, in the order of guc-file.l, because flex breaks length ties by rule order.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("WS", re.compile(r"[ \t\r]+")),
    ("COMMENT", re.compile(r"#.*", re.DOTALL)),
    ("ID", re.compile(_ID)),
    ("QID", re.compile(f"{_ID}\\.{_ID}")),
    ("STRING", re.compile(r"'(?:[^'\\\n]|\\.|'')*'")),
    ("UNQUOTED", re.compile(f"{_L}{_UNQUOTED_TAIL}*")),
    ("INTEGER", re.compile(r"[-+]?0x[0-9a-fA-F]+[a-zA-Z]*")),
    ("INTEGER", re.compile(r"[-+]?[0-9]+[a-zA-Z]*")),
    ("REAL", re.compile(r"[-+]?[0-9]*\.[0-9]*(?:[Ee][-+]?[0-9]+)?")),
    ("EQUALS", re.compile(r"=")),
)
VALUE_KINDS = frozenset({"ID", "STRING", "INTEGER", "REAL", "UNQUOTED"})
_PLAIN_VALUE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|(?i:on|off|true|false|yes|no)")
NAME = re.compile(f"{_ID}(?:\\.{_ID})?")


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a line: its flex rule, its text and where it stands."""

    kind: str
    text: str
    start: int
    end: int


def lex(text: str) -> list[Token]:
    toks: list[Token] = []
    pos = 0
    while pos < len(text):
        best_kind, best_len = "ERROR", 1
        for kind, pattern in _RULES:
            m = pattern.match(text, pos)
            if m is not None and m.end() - pos > best_len - (best_kind == "ERROR"):
                best_kind, best_len = kind, m.end() - pos
        if best_kind != "WS":
            toks.append(Token(best_kind, text[pos : pos + best_len], pos, pos + best_len))
        pos += best_len
    return toks


def unquote_value(raw: str) -> str:
    """The value PostgreSQL sees for a raw value token (``DeconstructEscapedString`` for quoted ones)."""
    if len(raw) < 2 or raw[0] != "'" or raw[-1] != "'":
        return raw
    body = raw[1:-1]
    out: list[str] = []
    i = 0
    escapes = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            i += 1
            c = body[i]
            if c in escapes:
                out.append(escapes[c])
            elif c in "01234567":
                digits = c
                while len(digits) < 3 and i + 1 < len(body) and body[i + 1] in "01234567":
                    i += 1
                    digits += body[i]
                out.append(chr(int(digits, 8) & 0xFF))
            else:
                out.append(c)
        elif c == "'" and body[i + 1 : i + 2] == "'":
            i += 1
            out.append("'")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def quote_value(value: str) -> str:
    """Quote ``value`` so that PostgreSQL reads it back exactly (``unquote_value`` inverts this)."""
    if "\0" in value:
        raise ValueError("a configuration value cannot contain a NUL character")
    body = value.replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n")
    return f"'{body}'"


def format_value(value: str | int | float | bool) -> str:
    """How pgbatten writes a value: bare for plain numbers and booleans, single-quoted otherwise."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        text = str(value)
        if not _PLAIN_VALUE.fullmatch(text):
            raise ValueError(f"cannot write {value!r} as a configuration value")
        return text
    if _PLAIN_VALUE.fullmatch(value):
        return value
    return quote_value(value)
