"""pg_ident.conf: ``MAPNAME SYSTEM-USERNAME PG-USERNAME`` lines, kept verbatim, and idempotent additions.

Same tokenizer as pg_hba.conf (quotes, comments, continuations from PostgreSQL 14, include directives from
16: before that ``include`` is just a map name). A
system user name starting with ``/`` is a regular expression (``\\1`` in the PostgreSQL user refers to its
first capture group); this module stores it as written and does not check the regular expression.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgbatten.errors import ParseError
from pgbatten.pgconf.auth_tokens import (
    Dialect,
    check_includes,
    dialect,
    layout_columns,
    logical_lines,
    quote_token,
    render_columns,
    terminated,
    tokenize,
)
from pgbatten.pgconf.lines import dominant_eol, read_text
from pgbatten.pgconf.postgresql_conf import IncludeKind

__all__ = [
    "IdentComment",
    "IdentFile",
    "IdentInclude",
    "IdentLine",
    "IdentMapping",
    "add_mapping",
    "load_ident",
    "parse_ident",
    "render",
]

_DEFAULT_COLUMNS = (0, 16, 40)  # the layout of initdb's header comment
_INCLUDE_NAMES = frozenset(k.value for k in IncludeKind)


@dataclass(frozen=True, slots=True)
class IdentComment:
    """A comment or blank line."""

    lineno: int
    raw: str
    eol: str


@dataclass(frozen=True, slots=True)
class IdentInclude:
    """An include directive (PostgreSQL 16+), kept as written."""

    lineno: int
    raw: str
    eol: str
    kind: IncludeKind
    path: str


@dataclass(frozen=True, slots=True)
class IdentMapping:
    """One mapping; the three names are as PostgreSQL reads them (quotes removed)."""

    lineno: int
    raw: str
    eol: str
    map_name: str
    system_user: str
    pg_user: str

    @property
    def is_regex(self) -> bool:
        """Whether the system user name is a regular expression."""
        return self.system_user.startswith("/")


IdentLine = IdentComment | IdentInclude | IdentMapping


@dataclass(frozen=True, slots=True)
class IdentFile:
    """A parsed pg_ident.conf that renders back to exactly the text it came from."""

    lines: tuple[IdentLine, ...]
    path: Path | None = None
    major: int | None = None
    """The PostgreSQL major version whose rules the file was read with (None: the newest)."""

    @property
    def dialect(self) -> Dialect:
        """How PostgreSQL ``major`` tokenizes the file."""
        return dialect(self.major)

    @property
    def mappings(self) -> tuple[IdentMapping, ...]:
        """The mappings in file order."""
        return tuple(ln for ln in self.lines if isinstance(ln, IdentMapping))


def _parse_line(raw: str, eol: str, lineno: int, path: Path | None, rules: Dialect) -> IdentLine:
    tok = tokenize(raw, lineno, path, rules)
    fields = tok.fields
    if not fields:
        return IdentComment(lineno, raw, eol)
    first = fields[0][0]
    if rules.includes and len(fields) == 2 and first.value in _INCLUDE_NAMES:
        # As hba.c: exactly two fields, the first token naming an include; any other line is a mapping (a
        # map may be called include).
        return IdentInclude(lineno, raw, eol, IncludeKind(first.value), fields[1][0].value)
    hint = " (after an unterminated quoted string)" if tok.open_quote else ""
    if len(fields) < 3:
        raise ParseError(path, lineno, raw, "missing entry at end of line" + hint)
    if any(len(f) != 1 for f in fields[:3]):
        raise ParseError(path, lineno, raw, "multiple values in ident field" + hint)
    # PostgreSQL ignores anything after the third field; so do we (it stays in ``raw``).
    return IdentMapping(lineno, raw, eol, fields[0][0].value, fields[1][0].value, fields[2][0].value)


def parse_ident(text: str, path: Path | None = None, *, major: int | None = None) -> IdentFile:
    """Parse pg_ident.conf text as PostgreSQL ``major`` reads it (None: the newest rules).

    ``ParseError`` names the file and line of anything malformed.
    """
    rules = dialect(major)
    lines = tuple(
        _parse_line(ll.raw, ll.eol, ll.index + 1, path, rules) for ll in logical_lines(text, rules, path)
    )
    return IdentFile(lines, path, major)


def render(ident: IdentFile) -> str:
    """The file's text, byte-for-byte what was parsed plus any added lines."""
    return "".join(ln.raw + ln.eol for ln in ident.lines)


def load_ident(path: Path, *, major: int | None = None) -> IdentFile:
    """Read and parse a pg_ident.conf (``FileProblem`` if unreadable; include targets as for ``load_hba``)."""
    path = Path(path)
    text = read_text(path)
    try:
        ident = parse_ident(text, path, major=major)
    except ParseError as exc:
        # As for load_hba: a missing include above the first bad line is the error PostgreSQL names.
        check_includes(path, _includes_before(text, path, dialect(major), exc.lineno))
        raise
    check_includes(
        path, ((i.lineno, i.raw, i.kind, i.path) for i in ident.lines if isinstance(i, IdentInclude))
    )
    return ident


def _includes_before(text: str, path: Path, rules: Dialect, stop: int) -> Iterator[tuple[int, str, str, str]]:
    with contextlib.suppress(ParseError):
        for ll in logical_lines(text, rules, path):
            if ll.index + 1 >= stop:
                return
            line = _parse_line(ll.raw, ll.eol, ll.index + 1, path, rules)
            if isinstance(line, IdentInclude):
                yield line.lineno, line.raw, line.kind, line.path


def add_mapping(ident: IdentFile, map_name: str, system_user: str, pg_user: str) -> tuple[IdentFile, bool]:
    """Append ``map_name system_user pg_user`` unless that exact mapping exists; returns ``(new, changed)``.

    ``system_user`` may be a ``/regex``. Names are quoted as needed; the new line follows the columns of the
    last single-line mapping, or initdb's header layout.
    """
    for m in ident.mappings:
        if (m.map_name, m.system_user, m.pg_user) == (map_name, system_user, pg_user):
            return ident, False
    columns: tuple[int, ...] | list[int] = _DEFAULT_COLUMNS
    for existing in reversed(ident.mappings):
        cols = layout_columns(existing.raw, ident.dialect)
        if cols is not None and len(cols) >= 3:
            columns = cols
            break
    line = render_columns([quote_token(map_name), quote_token(system_user), quote_token(pg_user)], columns)
    eol = dominant_eol([ln.eol for ln in ident.lines])
    text = terminated(render(ident), eol, ident.dialect)
    return parse_ident(text + line + eol, ident.path, major=ident.major), True
