"""The tokenizer PostgreSQL shares between pg_hba.conf and pg_ident.conf (``hba.c``), version by version.

**Logical lines.** PostgreSQL 14 and later read a line with ``pg_get_line_append`` and join it to the next
when it ends in a backslash (the backslash is removed; a second backslash left at the end does not continue
again). A NUL byte ends what ``strlen`` sees of a physical line, and because what is left then does not end
in a newline, the next physical line is read on as part of the same line. PostgreSQL 12 and 13 read each
physical line with ``fgets``: no continuations (a backslash is an ordinary character), and a NUL byte ends
the line. Trailing ``\\r`` and ``\\n`` are stripped either way.

**Fields and tokens.** A field is a comma list of tokens: ``a,b`` and ``a, b`` are one field (the blanks
after a comma are skipped) while ``a ,b`` is two. Double quotes protect blanks, commas and ``#``; ``""``
inside quotes is a literal quote, and a quote left open ends with the line; a token whose first character
is a quote keeps the name from being a keyword (``"all"`` is a database called all). An unquoted ``#``
starts a comment anywhere, even in the middle of a token. A token longer than PostgreSQL's buffer is an
error.

Offsets returned here refer to the logical line's ``raw`` text, so edits can splice the file as written.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

from pgbatten.errors import ParseError
from pgbatten.pgconf.lines import fit_gap, split_lines, visual_col

__all__ = [
    "Dialect",
    "LogicalLine",
    "Token",
    "Tokenized",
    "check_includes",
    "dialect",
    "edit_line",
    "iter_logical_lines",
    "layout_columns",
    "logical_content",
    "logical_lines",
    "needs_quotes",
    "quote_token",
    "render_columns",
    "terminated",
    "tokenize",
]

_BLANK = " \t\r\n"
_TOKEN_RUN = re.compile(r"[^ \t\r\n,]+")
MAX_TOKEN = 10240  # hba.c's token buffer before PostgreSQL 16, terminating NUL included
_NO_LIMIT = sys.maxsize
# pg_get_line_append starts with a 1024-byte buffer; a NUL inside the first read of a line drops the rest of
# that read only. Past this size the outcome depends on the buffer's history, so we do not guess.
_NUL_SAFE_BYTES = 1000


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a PostgreSQL major version does with these files (``major`` None: the newest rules)."""

    major: int | None
    continuations: bool
    includes: bool
    token_limit: bool


@cache
def dialect(major: int | None) -> Dialect:
    """The rules of PostgreSQL ``major``: continuations from 14, include directives from 16, and from 16
    tokens of any length (the tokenizer rewritten for include directives keeps them in a StringInfo; before,
    a token had to fit a 10240-byte buffer; measured on 15 and 17)."""
    newest = major is None
    return Dialect(
        major=major,
        continuations=newest or major >= 14,  # type: ignore[operator]
        includes=newest or major >= 16,  # type: ignore[operator]
        token_limit=not newest and major < 16,  # type: ignore[operator]
    )


class Token(NamedTuple):
    """One token: ``text`` as written (quotes kept), ``value`` as PostgreSQL reads it, offsets in ``raw``."""

    text: str
    value: str
    quoted: bool
    field: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One logical line: ``raw`` is the exact text (continuations included, final line ending excluded)."""

    index: int
    raw: str
    eol: str


@dataclass(frozen=True, slots=True)
class Tokenized:
    """The fields of a logical line, with ``comment_at`` the offset in ``raw`` of an unquoted ``#``."""

    fields: tuple[tuple[Token, ...], ...]
    comment_at: int | None
    open_quote: bool = False
    """A quote was still open at the end of the line. PostgreSQL does not mind (the token simply ends
    there), but when the line is refused for something else this is usually why."""

    @property
    def tokens(self) -> tuple[Token, ...]:
        """All tokens, flattened in order."""
        return tuple(t for f in self.fields for t in f)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def logical_lines(text: str, rules: Dialect, path: Path | None = None) -> list[LogicalLine]:
    """Group physical lines into logical ones; ``"".join(l.raw + l.eol)`` gives ``text`` back.

    ``ParseError`` for the one input PostgreSQL itself reads unpredictably (a NUL byte deep in a long line).
    """
    return [LogicalLine(i, raw, eol) for i, raw, eol in iter_logical_lines(text, rules, path)]


def iter_logical_lines(text: str, rules: Dialect, path: Path | None = None) -> Iterator[tuple[int, str, str]]:
    """``logical_lines`` as plain ``(index, raw, eol)`` tuples, for the parsers' inner loop."""
    phys = split_lines(text)
    i = 0
    n = len(phys)
    continuations = rules.continuations
    while i < n:
        content, eol = phys[i]
        if "\0" not in content and not (continuations and content.rstrip("\r").endswith("\\")):
            yield i, content, eol  # the common case: one physical line
            i += 1
            continue
        end, _ = _read_line(phys, i, rules, None, path)
        raw = "".join(c + e for c, e in phys[i : end - 1]) + phys[end - 1][0]
        yield i, raw, phys[end - 1][1]
        i = end


def _read_line(
    phys: Sequence[tuple[str, str]], i: int, rules: Dialect, offsets: list[int] | None, path: Path | None
) -> tuple[int, str]:
    """Read one logical line from ``phys[i:]`` as PostgreSQL does: (index after it, the text it sees).

    With ``offsets``, also record for each character its offset from the start of ``phys[i]``.
    """
    start = i
    n = len(phys)
    buf = ""
    last_backslash = 0
    pos = 0
    while True:
        # One fgets (12, 13) or one pg_get_line_append (14+): past a NUL byte strlen sees nothing more, and
        # in 14+ the read goes on with the next physical line because no newline was seen.
        while True:
            content, eol = phys[i]
            i += 1
            nul = content.find("\0")
            if nul < 0:
                piece = content + eol
            else:
                if _utf8_len(buf) + _utf8_len(content) + 1 > _NUL_SAFE_BYTES:
                    raise ParseError(
                        path,
                        start + 1,
                        content[:nul],
                        "NUL byte in a long line: PostgreSQL's reading of it depends on its buffer sizes;"
                        " remove the NUL byte",
                    )
                piece = content[:nul]
            buf += piece
            if offsets is not None:
                offsets.extend(range(pos, pos + len(piece)))
            pos += len(content) + len(eol)
            if nul < 0 or i >= n or not rules.continuations:
                break
        keep = len(buf.rstrip("\r\n"))
        buf = buf[:keep]
        if offsets is not None:
            del offsets[keep:]
        if rules.continuations and len(buf) > last_backslash and buf.endswith("\\"):
            buf = buf[:-1]
            if offsets is not None:
                offsets.pop()
            last_backslash = len(buf)
            if i < n:
                continue
        return i, buf


def logical_content(raw: str, rules: Dialect) -> tuple[str, list[int] | None]:
    """The text PostgreSQL tokenizes for a logical line, and per character its offset in ``raw``.

    Offsets are None when they are the identity (a single physical line without NUL or continuation).
    """
    if "\n" not in raw and "\0" not in raw:
        body = raw.rstrip("\r")
        if rules.continuations and body.endswith("\\"):
            body = body[:-1]  # the file's last line ends in a continuation: PostgreSQL drops the backslash
        return body, None
    offsets: list[int] = []
    _, content = _read_line(split_lines(raw), 0, rules, offsets, None)
    return content, offsets


def tokenize(raw: str, lineno: int, path: Path | None, rules: Dialect) -> Tokenized:
    """Split a logical line into fields of tokens (offsets refer to ``raw``)."""
    content, offsets = logical_content(raw, rules)
    limit = MAX_TOKEN if rules.token_limit else _NO_LIMIT
    if '"' not in content:
        return _tokenize_plain(content, offsets, raw, lineno, path, limit)
    return _tokenize_quoted(content, offsets, raw, lineno, path, limit)


def _too_long(path: Path | None, lineno: int, raw: str) -> ParseError:
    return ParseError(path, lineno, raw, "authentication file token too long")


_TABS_AND_CR_AS_SPACE = str.maketrans("\t\r", "  ")
# str.split() without arguments also splits on these (and on non-ASCII spaces), PostgreSQL does not.
_NOT_BLANK_TO_POSTGRES = re.compile("[\x0b\x0c\x1c-\x1f]")
_new_token = tuple.__new__  # a NamedTuple's own __new__ is a Python function: too slow for every token


def _words(body: str) -> Iterator[tuple[int, str]]:
    """The runs of non-blank characters of ``body`` and where they start (blank: space, tab, CR)."""
    if body.isascii() and _NOT_BLANK_TO_POSTGRES.search(body) is None:
        pos = 0
        find = body.find
        for word in body.split():
            pos = find(word, pos)
            yield pos, word
            pos += len(word)
        return
    pos = 0
    for word in body.translate(_TABS_AND_CR_AS_SPACE).split(" "):
        if word:
            yield pos, word
        pos += len(word) + 1


def _tokenize_plain(
    content: str, offsets: list[int] | None, raw: str, lineno: int, path: Path | None, limit: int
) -> Tokenized:
    # Without quotes a token is a run of characters other than blanks and commas, up to an unquoted "#"; a
    # token followed directly by a comma continues its field (after more blanks and commas, if any). Split
    # on blanks into words, then words on commas, with C-speed string methods.
    hash_at = content.find("#")
    body = content if hash_at < 0 else content[:hash_at]
    fields: list[tuple[Token, ...]] = []
    cur: list[Token] | None = None  # a field still open after a trailing comma
    for start, word in _words(body):
        if "," not in word:
            if len(word) * 4 >= limit - 1 and _utf8_len(word) >= limit:
                raise _too_long(path, lineno, raw)
            end = start + len(word)
            if offsets is not None:
                start, end = offsets[start], offsets[end - 1] + 1
            tok = _new_token(Token, (word, word, False, len(fields), start, end))
            if cur is None:
                fields.append((tok,))
            else:
                cur.append(tok)
                fields.append(tuple(cur))
                cur = None
            continue
        parts = word.split(",")
        p = start
        for k, part in enumerate(parts):
            if part:
                if len(part) * 4 >= limit - 1:
                    length = _utf8_len(part)
                    if length >= limit or (length == limit - 1 and k < len(parts) - 1):
                        raise _too_long(path, lineno, raw)
                s, e = p, p + len(part)
                if offsets is not None:
                    s, e = offsets[s], offsets[e - 1] + 1
                if cur is None:
                    cur = []
                cur.append(_new_token(Token, (part, part, False, len(fields), s, e)))
            p += len(part) + 1
        if not word.endswith(",") and cur is not None:
            fields.append(tuple(cur))
            cur = None
    if cur is not None:
        fields.append(tuple(cur))
    comment_at = None if hash_at < 0 else (hash_at if offsets is None else offsets[hash_at])
    return Tokenized(tuple(fields), comment_at)


def _tokenize_quoted(
    content: str, offsets: list[int] | None, raw: str, lineno: int, path: Path | None, limit: int
) -> Tokenized:
    # A transcription of next_token/next_field_expand, character by character.
    at = offsets if offsets is not None else range(len(content))
    n = len(content)
    fields: list[tuple[Token, ...]] = []
    comment_at: int | None = None
    open_quote = False
    i = 0
    while i < n:
        field: list[Token] = []
        while True:
            while i < n and (content[i] in _BLANK or content[i] == ","):
                i += 1
            start = i
            buf: list[str] = []
            stored = 0
            in_quote = was_quote = saw_quote = initial_quote = comma = False
            while i < n and (content[i] not in _BLANK or in_quote):
                c = content[i]
                if c == "#" and not in_quote:
                    comment_at = at[i]
                    break
                if stored >= limit - 1:
                    raise _too_long(path, lineno, raw)
                if c == "," and not in_quote:
                    comma = True
                    break
                if c != '"' or was_quote:
                    buf.append(c)
                    stored += 1 if c < "\x80" else _utf8_len(c)
                was_quote = (not was_quote) if (in_quote and c == '"') else False
                if c == '"':
                    in_quote = not in_quote
                    saw_quote = True
                    if not buf:
                        initial_quote = True
                i += 1
            open_quote = open_quote or in_quote
            end = i
            if comment_at is not None:
                i = n
            if not (saw_quote or buf):
                break
            field.append(
                Token(
                    content[start:end], "".join(buf), initial_quote, len(fields), at[start], at[end - 1] + 1
                )
            )
            if not comma:
                break
            i += 1
        if not field:
            break
        fields.append(tuple(field))
    return Tokenized(tuple(fields), comment_at, open_quote)


KEEP = object()


def edit_line(raw: str, edits: Mapping[int, str | None], rules: Dialect, append: Sequence[str] = ()) -> str:
    """Rewrite some tokens of a logical line (index into the flat token list; ``None`` deletes).

    Everything else, including continuations and comments, is kept; later columns on the same physical
    line keep their original position when the new text leaves room (see ``fit_gap``).
    """
    tok = tokenize(raw, 0, None, rules)
    out = ""
    prev = 0
    last_edit = max(edits, default=-1)
    for k, t in enumerate(tok.tokens):
        gap = raw[prev : t.start]
        new = edits.get(k, KEEP)
        if new is None:
            if "\n" in gap:
                out += gap
            prev = t.end
            continue
        if k == 0 or gap.strip(" \t\r"):
            out += gap
        else:
            out += fit_gap(out, gap, visual_col(raw[: t.start]), visual_col(raw[:prev]))
        out += raw[t.start : t.end] if new is KEEP else str(new)
        prev = t.end
        if k >= last_edit and not append and visual_col(out) == visual_col(raw[:prev]):
            # Back in step with the original and nothing left to change: the rest is kept as written
            # (which is what the remaining steps would produce, one verbatim gap at a time).
            return out + raw[prev:]
    for extra in append:
        out += " " + extra
    tail = raw[prev:]
    if tok.comment_at is not None and tok.comment_at >= prev:
        cut = tok.comment_at - prev
        gap, comment = tail[:cut], tail[cut:]
        if gap.strip(" \t\r"):
            return out + tail
        target = visual_col(raw[: tok.comment_at])
        if target <= visual_col(out):
            return out + gap + comment  # cannot stay aligned: keep the author's spacing before the comment
        return out + fit_gap(out, gap, target, visual_col(raw[:prev])) + comment
    return out + tail


def needs_quotes(value: str) -> bool:
    """Whether a name must be double-quoted in pg_hba.conf / pg_ident.conf.

    A name ending in a backslash is quoted too: at the end of a line it would continue the line.
    """
    return not value or value.endswith("\\") or any(c in _BLANK or c in ',#"' for c in value)


def quote_token(value: str) -> str:
    """Quote ``value`` as a single token if needed (``""`` for an embedded quote)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{value!r}: names cannot contain line breaks or NUL")
    return '"' + value.replace('"', '""') + '"' if needs_quotes(value) else value


def layout_columns(raw: str, rules: Dialect) -> list[int] | None:
    """Display column of the first token of each field, if the line is a single physical line."""
    if "\n" in raw:
        return None
    tok = tokenize(raw, 0, None, rules)
    return [visual_col(raw[: f[0].start]) for f in tok.fields]


def render_columns(fields: Sequence[str], columns: Sequence[int]) -> str:
    """Lay out ``fields`` on the given columns, with at least one space between fields."""
    out = ""
    for k, text in enumerate(fields):
        if k:
            target = columns[k] if k < len(columns) else 0
            out += " " * max(1, target - visual_col(out))
        out += text
    return out


def terminated(text: str, eol: str, rules: Dialect) -> str:
    """``text`` made safe to append lines to: ending in a line break, and not in a pending continuation.

    At the very end of a file a trailing backslash (14+) or a NUL byte leaves PostgreSQL reading on into
    whatever is appended; an empty line ends that.
    """
    if not text:
        return text
    if not text.endswith("\n"):
        text += eol
    if logical_lines(text + "#", rules)[-1].raw != "#":
        text += eol
    return text


def check_includes(path: Path, includes: Iterable[tuple[int, str, str, str]]) -> None:
    """Refuse what PostgreSQL 16+ refuses in an include line of ``path``: (lineno, raw, kind, target) each.

    Targets are relative to the including file's directory. ``include`` needs a file it can open (a
    directory reads as empty), ``include_dir`` a directory; ``include_if_exists`` skips what is missing.
    The included files themselves are not read here.
    """
    for lineno, raw, kind, target in includes:
        if kind == "include_if_exists":
            continue
        full = path.parent / target
        if kind == "include_dir":
            if not full.is_dir():
                raise ParseError(path, lineno, raw, f'could not open directory "{full}"')
        elif not (full.is_dir() or os.access(full, os.R_OK)):
            reason = "No such file or directory" if not full.exists() else "Permission denied"
            raise ParseError(path, lineno, raw, f'could not open file "{full}": {reason}')
