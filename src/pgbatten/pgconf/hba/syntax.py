"""pg_hba.conf as a typed, line-preserving model: parse, render, load.

Parsing follows PostgreSQL's ``hba.c`` for the cluster's major version (the tokenizer shared with
pg_ident.conf is in ``auth_tokens``). It rejects what PostgreSQL would reject when loading the file (unknown
connection type or method, missing fields, bad CIDR or netmask, options not in ``name=value`` form,
``clientcert`` outside ``hostssl``, include directives before PostgreSQL 16...), because a file PostgreSQL
refuses is silently ignored on reload and the old rules stay in force; and it accepts what PostgreSQL
accepts: addresses are read with the C library's numeric ``getaddrinfo`` as PostgreSQL reads them, so
``0/0``, ``127.1/32`` and ``010.0.0.1`` (octal: 8.0.0.1) mean what they mean to the server.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pgbatten.errors import ParseError
from pgbatten.pgconf._bulk import gc_paused
from pgbatten.pgconf.auth_tokens import (
    MAX_TOKEN,
    Dialect,
    Token,
    check_includes,
    dialect,
    iter_logical_lines,
    tokenize,
)
from pgbatten.pgconf.lines import read_text
from pgbatten.pgconf.postgresql_conf import IncludeKind

__all__ = [
    "AUTH_METHODS",
    "PASSWORD_METHODS",
    "ConnType",
    "HbaComment",
    "HbaFile",
    "HbaInclude",
    "HbaLine",
    "HbaRule",
    "load_hba",
    "numeric_address",
    "parse_hba",
    "parse_lines",
    "render",
    "token_value",
]


class ConnType(StrEnum):
    """The first column of a rule."""

    LOCAL = "local"
    HOST = "host"
    HOSTSSL = "hostssl"
    HOSTNOSSL = "hostnossl"
    HOSTGSSENC = "hostgssenc"
    HOSTNOGSSENC = "hostnogssenc"


AUTH_METHODS = frozenset(
    {
        "trust",
        "reject",
        "scram-sha-256",
        "md5",
        "password",
        "gss",
        "sspi",
        "ident",
        "peer",
        "ldap",
        "radius",
        "cert",
        "pam",
        "bsd",
    }
)
PASSWORD_METHODS = frozenset({"scram-sha-256", "md5", "password"})
_ADDRESS_KEYWORDS = frozenset({"all", "samehost", "samenet"})
_INCLUDE_NAMES = frozenset(k.value for k in IncludeKind)
_CLIENTCERT_VALUES = frozenset({"verify-ca", "verify-full"})


@dataclass(frozen=True, slots=True)
class HbaComment:
    """A comment line or a blank line, kept verbatim."""

    lineno: int
    raw: str
    eol: str

    @property
    def is_blank(self) -> bool:
        """True for an empty or whitespace-only line."""
        return not self.raw.strip()


@dataclass(frozen=True, slots=True)
class HbaInclude:
    """``include``, ``include_if_exists`` or ``include_dir`` (PostgreSQL 16+), kept as written."""

    lineno: int
    raw: str
    eol: str
    kind: IncludeKind
    path: str


@dataclass(frozen=True, slots=True)
class HbaRule:
    """One rule; may span several physical lines joined with a trailing backslash (PostgreSQL 14+).

    ``databases`` and ``users`` hold tokens as written, quotes included, so ``all`` (the keyword) and
    ``"all"`` (a database named all) stay distinct; ``@file`` references are kept as-is (see ``token_value``).
    ``address`` is ``None`` for ``local``; an address with a separate netmask column is normalised to
    ``addr/prefix`` here, the netmask token itself kept in ``netmask``. A numeric address PostgreSQL reads
    in a form other than the usual one (``127.1``, ``0``, octal ``010.0.0.1``) is given in the usual form
    (``127.0.0.1/32``, ``0.0.0.0/0``, ``8.0.0.1/32``).
    """

    lineno: int
    raw: str
    eol: str
    conn_type: ConnType
    databases: tuple[str, ...]
    users: tuple[str, ...]
    address: str | None
    method: str
    options: tuple[tuple[str, str], ...] = ()
    netmask: str | None = None
    comment: str | None = None

    @property
    def is_tcp(self) -> bool:
        """Every type but ``local`` is a TCP/IP rule."""
        return self.conn_type is not ConnType.LOCAL

    @property
    def is_reject(self) -> bool:
        """Whether the rule refuses what it matches."""
        return self.method == "reject"

    def option(self, name: str) -> str | None:
        """The value of an authentication option (the last one if repeated, as PostgreSQL does)."""
        found = None
        for key, value in self.options:
            if key == name:
                found = value
        return found


HbaLine = HbaComment | HbaInclude | HbaRule


@dataclass(frozen=True, slots=True)
class HbaFile:
    """A parsed pg_hba.conf that renders back to exactly the text it came from."""

    lines: tuple[HbaLine, ...]
    path: Path | None = None
    major: int | None = None
    """The PostgreSQL major version whose rules the file was read with (None: the newest)."""

    @property
    def dialect(self) -> Dialect:
        """How PostgreSQL ``major`` tokenizes the file."""
        return dialect(self.major)

    @property
    def rules(self) -> tuple[HbaRule, ...]:
        """The rules, in the order PostgreSQL tries them."""
        return tuple(ln for ln in self.lines if isinstance(ln, HbaRule))


def token_value(token: str) -> str:
    """The name a token stands for: quotes removed and ``""`` turned into ``"``."""
    if '"' not in token:
        return token
    out: list[str] = []
    in_quote = was_quote = False
    for c in token:
        if c != '"' or was_quote:
            out.append(c)
        was_quote = (not was_quote) if (in_quote and c == '"') else False
        if c == '"':
            in_quote = not in_quote
    return "".join(out)


# --- parsing --------------------------------------------------------------------------------------


class _Fail:
    def __init__(self, path: Path | None, lineno: int, raw: str) -> None:
        self.path, self.lineno, self.raw = path, lineno, raw
        self.open_quote = False

    def __call__(self, reason: str) -> ParseError:
        if self.open_quote:
            reason += " (after an unterminated quoted string)"
        return ParseError(self.path, self.lineno, self.raw, reason)


def _one(fields: Sequence[Sequence[Token]], i: int, what: str, many: str, fail: _Fail) -> Token:
    if i >= len(fields):
        raise fail(f"end-of-line before {what}")
    if len(fields[i]) != 1:
        raise fail(f"multiple values specified for {many}")
    return fields[i][0]


def numeric_address(text: str) -> tuple[int, str] | None:
    """``(4 or 6, usual spelling)`` when PostgreSQL reads ``text`` as a numeric address, None for a host name.

    PostgreSQL asks ``getaddrinfo`` with ``AI_NUMERICHOST``; so do we, after a fast path for the usual
    spellings. ``ValueError`` when the C library refuses it for another reason than "not numeric".
    """
    try:
        socket.inet_pton(socket.AF_INET, text)
        return 4, text
    except OSError:
        pass
    if ":" in text and "%" not in text:
        try:
            socket.inet_pton(socket.AF_INET6, text)
            return 6, text
        except OSError:
            pass
    if not text or "\0" in text:
        return None
    try:
        # Bytes, so that Python hands the C library the name as written instead of IDNA-encoding it first.
        found = socket.getaddrinfo(text.encode("utf-8", "surrogateescape"), None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_NONAME:
            return None
        raise ValueError(exc.strerror) from None
    family, _, _, _, sockaddr = found[0]
    return (4 if family == socket.AF_INET else 6), str(sockaddr[0])


# strtol(numbits, &end, 10) must consume it all: optional leading white space and sign, then digits.
_CIDR_BITS = re.compile(r"[ \t\n\v\f\r]*([-+]?[0-9]+)")


def _cidr_bits(text: str, version: int) -> int | None:
    if text.isdigit() and text.isascii():
        bits = int(text)
    else:
        m = _CIDR_BITS.fullmatch(text)
        if m is None or not text.isascii():
            return None
        bits = int(m.group(1))
    return bits if 0 <= bits <= (32 if version == 4 else 128) else None


def _prefix_of(mask: str, version: int) -> int | None:
    """The prefix length of a netmask, None if its one bits are not contiguous."""
    packed = socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, mask)
    size = len(packed) * 8
    value = int.from_bytes(packed, "big")
    ones = size - (~value & ((1 << size) - 1)).bit_length()
    return ones if value == ((1 << size) - 1) ^ ((1 << (size - ones)) - 1) else None


def _parse_address(fields: Sequence[Sequence[Token]], fail: _Fail) -> tuple[str, str | None, int]:
    """Address (normalised), raw netmask and the index of the next field."""
    tok = _one(fields, 3, "IP address specification", "host address", fail)
    return _address(
        tok.value, tok.quoted, lambda: _one(fields, 4, "netmask specification", "netmask", fail), fail
    )


def _address(
    value: str, quoted: bool, mask_token: Callable[[], Token], fail: _Fail
) -> tuple[str, str | None, int]:
    """``_parse_address`` for the address token's ``value``; ``mask_token`` gives the next field's token."""
    if not quoted and value in _ADDRESS_KEYWORDS:
        return value, None, 4
    host, slash, prefix = value.partition("/")
    try:
        found = numeric_address(host)
    except ValueError as exc:
        raise fail(f"invalid IP address {host!r}: {exc}") from None
    if found is None:
        if slash:
            raise fail(f"invalid IP address {host!r} in {value!r}: a host name cannot have a CIDR mask")
        return value, None, 4  # a host name, or a ".domain" suffix; PostgreSQL resolves it per connection
    version, usual = found
    if slash:
        bits = _cidr_bits(prefix, version)
        if bits is None:
            raise fail(f"invalid CIDR mask in address {value!r}")
        return (value if usual == host and prefix == str(bits) else f"{usual}/{bits}"), None, 4
    mask_tok = mask_token()
    try:
        mask = numeric_address(mask_tok.value)
    except ValueError:
        mask = None
    if mask is None:
        raise fail(f"invalid IP mask {mask_tok.value!r}")
    if mask[0] != version:
        raise fail("IP address and mask do not match")
    bits = _prefix_of(mask[1], version)
    if bits is None:
        return f"{usual}/{mask[1]}", mask_tok.text, 5  # legal but not a prefix: kept, never "covered"
    return f"{usual}/{bits}", mask_tok.text, 5


# A line of plain words: no quotes, comment, list, continuation, NUL, or blank that str.split() knows and
# PostgreSQL does not. Most lines of a big generated file are like that, and ``_parse_plain`` reads them
# without the tokenizer.
_PLAIN_LINE = re.compile(r'[^"#,\\\0\x0b\x0c\x1c-\x1f]*')
_PLAIN_WORD_MAX = MAX_TOKEN - 2  # below any length check of the tokenizer


def _parse_plain(
    raw: str, eol: str, lineno: int, path: Path | None, share: Callable[[str], str]
) -> HbaLine | None:
    """``_parse_line`` for a line of plain words, or None (let the tokenizer read it).

    It refuses what the tokenizer path refuses, with the same words, through the same checks.
    """
    if not raw.isascii() or _PLAIN_LINE.fullmatch(raw) is None:
        return None
    words = raw.split()
    if not words:
        return HbaComment(lineno, raw, eol)
    conn = _CONN_TYPES.get(words[0])
    if conn is None or len(words) < 4 or max(map(len, words)) > _PLAIN_WORD_MAX:
        return None
    fail = _Fail(path, lineno, raw)
    address: str | None = None
    netmask: str | None = None
    nxt = 3
    if conn is not ConnType.LOCAL:

        def mask_token() -> Token:
            if len(words) <= 4:
                raise fail("end-of-line before netmask specification")
            return Token(words[4], words[4], False, 4, 0, 0)

        address, netmask, nxt = _address(words[3], False, mask_token, fail)
        address = share(address)
    if nxt >= len(words):
        return None
    method = _METHOD_NAMES.get(words[nxt])
    if method is None:
        return None
    options: list[tuple[str, str]] = []
    for word in words[nxt + 1 :]:
        name, eq, value = word.partition("=")
        if not eq:
            return None
        options.append((name, value))
    _validate(conn, method, options, fail)
    users = (share(words[2]),)
    return HbaRule(
        lineno, raw, eol, conn, (share(words[1]),), users, address, method, tuple(options), netmask, None
    )


def _parse_line(
    raw: str, eol: str, lineno: int, path: Path | None, rules: Dialect, shared: dict[str, str] | None = None
) -> HbaLine:
    """One logical line; ``shared`` maps names already seen to one string object each (memory)."""
    share = (lambda x: x) if shared is None else (lambda x: shared.setdefault(x, x))
    plain = _parse_plain(raw, eol, lineno, path, share)
    if plain is not None:
        return plain
    fail = _Fail(path, lineno, raw)
    tok = tokenize(raw, lineno, path, rules)
    fail.open_quote = tok.open_quote
    fields = tok.fields
    if not fields:
        return HbaComment(lineno, raw, eol)
    first = fields[0][0]
    if rules.includes and len(fields) == 2 and first.value in _INCLUDE_NAMES:
        # As hba.c: a line of exactly two fields whose first token (quoted or not) names an include; the
        # first token of the second field is the file. Any other line is read as a rule.
        return HbaInclude(lineno, raw, eol, IncludeKind(first.value), fields[1][0].value)
    if len(fields[0]) != 1:
        raise fail("multiple values specified for connection type")
    conn = _CONN_TYPES.get(first.value)
    if conn is None:
        hint = ""
        if first.value in _INCLUDE_NAMES and rules.includes:
            hint = f" ({first.value} takes exactly one file name)"
        elif first.value in _INCLUDE_NAMES:
            hint = f" (include directives need PostgreSQL 16 or later; this is PostgreSQL {rules.major})"
        raise fail(f"invalid connection type {first.value!r}{hint}")
    if len(fields) < 2:
        raise fail("end-of-line before database specification")
    if len(fields) < 3:
        raise fail("end-of-line before role specification")
    databases = tuple([share(t.text) for t in fields[1]])
    users = tuple([share(t.text) for t in fields[2]])
    address: str | None = None
    netmask: str | None = None
    nxt = 3
    if conn is not ConnType.LOCAL:
        address, netmask, nxt = _parse_address(fields, fail)
    method = _METHOD_NAMES.get(_one(fields, nxt, "authentication method", "authentication type", fail).value)
    if method is None:
        raise fail(f"invalid authentication method {fields[nxt][0].value!r}")
    if address is not None:
        address = share(address)
    options: list[tuple[str, str]] = []
    for fld in fields[nxt + 1 :]:
        for t in fld:
            name, eq, value = t.value.partition("=")
            if not eq:
                raise fail(f"authentication option not in name=value format: {t.value}")
            options.append((name, value))
    _validate(conn, method, options, fail)
    comment = raw[tok.comment_at :] if tok.comment_at is not None else None
    return HbaRule(
        lineno, raw, eol, conn, databases, users, address, method, tuple(options), netmask, comment
    )


_CONN_TYPES = {c.value: c for c in ConnType}
_METHOD_NAMES = {m: m for m in AUTH_METHODS}


def _validate(conn: ConnType, method: str, options: Sequence[tuple[str, str]], fail: _Fail) -> None:
    """The checks PostgreSQL makes that would make it refuse the whole file."""
    if method == "peer" and conn is not ConnType.LOCAL:
        raise fail("peer authentication is only supported on local sockets")
    if method in ("gss", "sspi") and conn is ConnType.LOCAL:
        raise fail(f"{method} authentication is not supported on local sockets")
    if method == "cert" and conn is not ConnType.HOSTSSL:
        raise fail("cert authentication is only supported on hostssl connections")
    for name, value in options:
        if name != "clientcert":
            continue
        if conn is not ConnType.HOSTSSL:
            raise fail('clientcert can only be configured for "hostssl" rows')
        if value not in _CLIENTCERT_VALUES:
            raise fail(f'invalid value for clientcert: "{value}"')
        if method == "cert" and value != "verify-full":
            raise fail('clientcert only accepts "verify-full" when using "cert" authentication')


def parse_lines(text: str, first_lineno: int, path: Path | None, rules: Dialect) -> list[HbaLine]:
    """Parse a stretch of pg_hba.conf text whose first line is line ``first_lineno`` of its file."""
    shared: dict[str, str] = {}
    return [
        _parse_line(raw, eol, index + first_lineno, path, rules, shared)
        for index, raw, eol in iter_logical_lines(text, rules, path)
    ]


@gc_paused
def parse_hba(text: str, path: Path | None = None, *, major: int | None = None) -> HbaFile:
    """Parse pg_hba.conf text the way PostgreSQL ``major`` reads it (None: the newest rules).

    ``ParseError`` (file, line, reason) on anything PostgreSQL would reject.
    """
    return HbaFile(tuple(parse_lines(text, 1, path, dialect(major))), path, major)


def render(hba: HbaFile) -> str:
    """The file's text; byte-for-byte what was parsed for lines no transform touched."""
    return "".join([ln.raw + ln.eol for ln in hba.lines])


def load_hba(path: Path, *, major: int | None = None) -> HbaFile:
    """Read and parse a pg_hba.conf (``FileProblem`` if unreadable). ``include`` lines are not followed,
    but their targets must be there as PostgreSQL needs them (``ParseError`` otherwise)."""
    path = Path(path)
    text = read_text(path)
    try:
        hba = parse_hba(text, path, major=major)
    except ParseError as exc:
        # PostgreSQL names the first bad line: an include above this error whose file is missing comes first.
        check_includes(path, _includes_before(text, path, dialect(major), exc.lineno))
        raise
    check_includes(path, ((i.lineno, i.raw, i.kind, i.path) for i in hba.lines if isinstance(i, HbaInclude)))
    return hba


def _includes_before(text: str, path: Path, rules: Dialect, stop: int) -> Iterator[tuple[int, str, str, str]]:
    """The include lines above line ``stop`` (the first that does not parse; every line above it does)."""
    with contextlib.suppress(ParseError):
        for index, raw, eol in iter_logical_lines(text, rules, path):
            if index + 1 >= stop:
                return
            line = _parse_line(raw, eol, index + 1, path, rules)
            if isinstance(line, HbaInclude):
                yield line.lineno, line.raw, line.kind, line.path
