"""pg_hba.conf as a typed, line-preserving model: parse, render, load.

Parsing follows PostgreSQL's ``hba.c`` (the tokenizer shared with pg_ident.conf is in ``auth_tokens``) and
rejects what PostgreSQL would reject when loading the file (unknown connection type or method, missing
fields, bad CIDR or netmask, options not in ``name=value`` form, ``clientcert`` outside ``hostssl``...),
because a file PostgreSQL refuses is silently ignored on reload and the old rules stay in force.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pgbatten.errors import ParseError
from pgbatten.pgconf.auth_tokens import Token, logical_lines, tokenize
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
    "parse_hba",
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
    """One rule; may span several physical lines joined with a trailing backslash (PostgreSQL 16+).

    ``databases`` and ``users`` hold tokens as written, quotes included, so ``all`` (the keyword) and
    ``"all"`` (a database named all) stay distinct; ``@file`` references are kept as-is (see ``token_value``).
    ``address`` is ``None`` for ``local``; an address with a separate netmask column is normalised to
    ``addr/prefix`` here, the netmask token itself kept in ``netmask``.
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

    @property
    def rules(self) -> tuple[HbaRule, ...]:
        """The rules, in the order PostgreSQL tries them."""
        return tuple(ln for ln in self.lines if isinstance(ln, HbaRule))


def token_value(token: str) -> str:
    """The name a token stands for: quotes removed and ``""`` turned into ``"``."""
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

    def __call__(self, reason: str) -> ParseError:
        return ParseError(self.path, self.lineno, self.raw, reason)


def _one(fields: Sequence[Sequence[Token]], i: int, what: str, fail: _Fail) -> Token:
    if i >= len(fields):
        raise fail(f"end-of-line before {what}")
    if len(fields[i]) != 1:
        raise fail(f"multiple values specified for {what}")
    return fields[i][0]


def _parse_address(fields: Sequence[Sequence[Token]], fail: _Fail) -> tuple[str, str | None, int]:
    """Address (normalised), raw netmask and the index of the next field."""
    tok = _one(fields, 3, "IP address specification", fail)
    value = tok.value
    if not tok.quoted and value in _ADDRESS_KEYWORDS:
        return value, None, 4
    if "/" in value:
        host, _, prefix = value.partition("/")
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise fail(f"invalid IP address {host!r} in {value!r}") from None
        if not prefix.isascii() or not prefix.isdigit() or int(prefix) > addr.max_prefixlen:
            raise fail(f"invalid CIDR mask in address {value!r}")
        return value, None, 4
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return value, None, 4  # a host name, or a ".domain" suffix; PostgreSQL resolves it per connection
    mask_tok = _one(fields, 4, "netmask specification", fail)
    try:
        mask = ipaddress.ip_address(mask_tok.value)
    except ValueError:
        raise fail(f"invalid IP mask {mask_tok.value!r}") from None
    if mask.version != addr.version:
        raise fail("IP address and mask do not match")
    bits = format(int(mask), f"0{mask.max_prefixlen}b")
    if "01" in bits:
        return f"{value}/{mask_tok.value}", mask_tok.text, 5  # legal but not a prefix: kept, never "covered"
    return f"{value}/{bits.count('1')}", mask_tok.text, 5


def _parse_rule(raw: str, eol: str, lineno: int, path: Path | None) -> HbaLine:
    fail = _Fail(path, lineno, raw)
    tok = tokenize(raw, lineno, path)
    fields = tok.fields
    if not fields:
        return HbaComment(lineno, raw, eol)
    first = fields[0][0]
    if not first.quoted and first.value in _INCLUDE_NAMES and len(fields[0]) == 1:
        if len(fields) != 2 or len(fields[1]) != 1:
            raise fail(f"{first.value} needs exactly one file name")
        return HbaInclude(lineno, raw, eol, IncludeKind(first.value), fields[1][0].value)
    if len(fields[0]) != 1:
        raise fail("multiple values specified for connection type")
    try:
        conn = ConnType(first.value)
    except ValueError:
        raise fail(f"invalid connection type {first.value!r}") from None
    if len(fields) < 2:
        raise fail("end-of-line before database specification")
    if len(fields) < 3:
        raise fail("end-of-line before role specification")
    databases = tuple(t.text for t in fields[1])
    users = tuple(t.text for t in fields[2])
    address: str | None = None
    netmask: str | None = None
    nxt = 3
    if conn is not ConnType.LOCAL:
        address, netmask, nxt = _parse_address(fields, fail)
    method = _one(fields, nxt, "authentication method", fail).value
    if method not in AUTH_METHODS:
        raise fail(f"invalid authentication method {method!r}")
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


def parse_hba(text: str, path: Path | None = None) -> HbaFile:
    """Parse pg_hba.conf text; ``ParseError`` (file, line, reason) on anything PostgreSQL would reject."""
    lines = tuple(_parse_rule(ll.raw, ll.eol, ll.index + 1, path) for ll in logical_lines(text))
    return HbaFile(lines, path)


def render(hba: HbaFile) -> str:
    """The file's text; byte-for-byte what was parsed for lines no transform touched."""
    return "".join(ln.raw + ln.eol for ln in hba.lines)


def load_hba(path: Path) -> HbaFile:
    """Read and parse a pg_hba.conf (``FileProblem`` if unreadable). ``include`` lines are not followed."""
    return parse_hba(read_text(Path(path)), Path(path))
