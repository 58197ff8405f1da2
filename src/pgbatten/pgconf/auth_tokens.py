"""The tokenizer shared by pg_hba.conf and pg_ident.conf, after PostgreSQL's ``hba.c``.

Logical lines are physical lines joined by a trailing backslash (PostgreSQL 16+). A field is a comma list of
tokens: ``a,b`` and ``a, b`` are one field (the blanks after a comma are skipped) while ``a ,b`` is two.
Double quotes protect blanks, commas and ``#``; ``""`` inside quotes is a literal quote; a token whose first
character is a quote keeps the name from being a keyword (``"all"`` is a database called all). An unquoted
``#`` starts a comment anywhere, even in the middle of a token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbatten.errors import ParseError
from pgbatten.pgconf.lines import fit_gap, split_lines, visual_col

_BLANK = " \t\r\n"


@dataclass(frozen=True, slots=True)
class Token:
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

    @property
    def tokens(self) -> tuple[Token, ...]:
        """All tokens, flattened in order."""
        return tuple(t for f in self.fields for t in f)


def logical_lines(text: str) -> list[LogicalLine]:
    """Group physical lines into logical ones; ``"".join(l.raw + l.eol)`` gives ``text`` back."""
    phys = split_lines(text)
    out: list[LogicalLine] = []
    i = 0
    while i < len(phys):
        start, raw = i, ""
        while True:
            content, eol = phys[i]
            i += 1
            if content.rstrip("\r").endswith("\\") and i < len(phys):
                raw += content + eol
                continue
            raw += content
            out.append(LogicalLine(start, raw, eol))
            break
    return out


def _logical_content(raw: str) -> tuple[str, list[int]]:
    """The text PostgreSQL tokenizes (continuations removed) and, per character, its offset in ``raw``."""
    chars: list[str] = []
    offsets: list[int] = []
    pos = 0
    pieces = raw.split("\n")
    for k, piece in enumerate(pieces):
        body = piece
        if k < len(pieces) - 1:
            body = piece.rstrip("\r")
            assert body.endswith("\\")
            body = body[:-1]
        chars.extend(body)
        offsets.extend(range(pos, pos + len(body)))
        pos += len(piece) + 1
    return "".join(chars), offsets


def tokenize(raw: str, lineno: int, path: Path | None) -> Tokenized:
    """Split a logical line into fields of tokens (offsets refer to ``raw``)."""
    content, offsets = _logical_content(raw)
    n = len(content)
    fields: list[tuple[Token, ...]] = []
    comment_at: int | None = None
    i = 0
    while i < n:
        field: list[Token] = []
        while True:
            while i < n and (content[i] in _BLANK or content[i] == ","):
                i += 1
            start = i
            buf: list[str] = []
            in_quote = was_quote = saw_quote = initial_quote = comma = False
            while i < n and (content[i] not in _BLANK or in_quote):
                c = content[i]
                if c == "#" and not in_quote:
                    comment_at = offsets[i]
                    break
                if c == "," and not in_quote:
                    comma = True
                    break
                if c != '"' or was_quote:
                    buf.append(c)
                was_quote = (not was_quote) if (in_quote and c == '"') else False
                if c == '"':
                    in_quote = not in_quote
                    saw_quote = True
                    if not buf:
                        initial_quote = True
                i += 1
            if in_quote:
                raise ParseError(path, lineno, raw, "unterminated quoted string")
            end = i
            if comment_at is not None:
                i = n
            if not (saw_quote or buf):
                break
            field.append(
                Token(
                    content[start:end],
                    "".join(buf),
                    initial_quote,
                    len(fields),
                    offsets[start],
                    offsets[end - 1] + 1,
                )
            )
            if not comma:
                break
            i += 1
        if not field:
            break
        fields.append(tuple(field))
    return Tokenized(tuple(fields), comment_at)


KEEP = object()


def edit_line(raw: str, edits: Mapping[int, str | None], append: Sequence[str] = ()) -> str:
    """Rewrite some tokens of a logical line (index into the flat token list; ``None`` deletes).

    Everything else, including continuations and comments, is kept; later columns on the same physical
    line keep their original position when the new text leaves room (see ``fit_gap``).
    """
    tok = tokenize(raw, 0, None)
    out = ""
    prev = 0
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
    """Whether a name must be double-quoted in pg_hba.conf / pg_ident.conf."""
    return not value or any(c in _BLANK or c in ',#"' for c in value)


def quote_token(value: str) -> str:
    """Quote ``value`` as a single token if needed (``""`` for an embedded quote)."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r}: names cannot contain line breaks")
    return '"' + value.replace('"', '""') + '"' if needs_quotes(value) else value


def layout_columns(raw: str) -> list[int] | None:
    """Display column of the first token of each field, if the line is a single physical line."""
    if "\n" in raw:
        return None
    tok = tokenize(raw, 0, None)
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
