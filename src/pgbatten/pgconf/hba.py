"""pg_hba.conf: a typed, line-preserving model, TLS-enforcing transforms, and a lint.

Parsing follows PostgreSQL's ``hba.c`` (tokenizing rules in ``_hbatok``) and rejects what PostgreSQL would
reject when loading the file (unknown connection type or method, missing fields, bad CIDR or netmask, options
not in ``name=value`` form, ``clientcert`` outside ``hostssl``...), because a file PostgreSQL refuses is
silently ignored on reload and the old rules stay in force.

Transforms return ``(new_file, changed)`` and re-render only the lines they change, keeping each changed
rule's column alignment where the new text fits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pgbatten.errors import ParseError
from pgbatten.findings import Finding, Severity, severity_rank
from pgbatten.pgconf._hbatok import (
    Token,
    edit_line,
    layout_columns,
    logical_lines,
    quote_token,
    render_columns,
    tokenize,
)
from pgbatten.pgconf._text import dominant_eol, read_text
from pgbatten.pgconf.postgresql_conf import IncludeKind

__all__ = [
    "AUTH_METHODS",
    "DISABLED_MARK",
    "GUARD_MARK",
    "PASSWORD_METHODS",
    "ConnType",
    "HbaComment",
    "HbaFile",
    "HbaInclude",
    "HbaLine",
    "HbaRule",
    "lint",
    "load_hba",
    "parse_hba",
    "render",
    "require_tls",
    "set_client_auth",
    "shadowing_rule",
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
GUARD_MARK = "# pgbatten: reject every TCP connection that does not use TLS, whatever rules follow"
DISABLED_MARK = "# pgbatten: disabled plaintext rule:"

# Which kinds of TCP connection each type matches: plaintext, TLS, GSSAPI-encrypted.
_TRANSPORTS: dict[ConnType, frozenset[str]] = {
    ConnType.LOCAL: frozenset({"local"}),
    ConnType.HOST: frozenset({"plain", "ssl", "gss"}),
    ConnType.HOSTSSL: frozenset({"ssl"}),
    ConnType.HOSTNOSSL: frozenset({"plain", "gss"}),
    ConnType.HOSTGSSENC: frozenset({"gss"}),
    ConnType.HOSTNOGSSENC: frozenset({"plain", "ssl"}),
}
_DB_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})
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


# --- transforms -----------------------------------------------------------------------------------


def _is_all(tokens: Sequence[str]) -> bool:
    return "all" in tokens


def _guard_coverage(rule: HbaRule) -> set[tuple[int, str]] | None:
    """What (IP version, database keyword) pairs a rule rejects for all non-TLS TCP, or None if not a guard.

    ``all`` does not match physical replication connections, so a complete guard needs ``replication`` too.
    """
    if rule.conn_type not in (ConnType.HOSTNOSSL, ConnType.HOST) or not rule.is_reject:
        return None
    if not _is_all(rule.users):
        return None
    kinds = {d for d in rule.databases if d in ("all", "replication")}
    if rule.address == "all":
        versions = {4, 6}
    elif rule.address == "0.0.0.0/0":
        versions = {4}
    elif rule.address == "::/0":
        versions = {6}
    else:
        return None
    if not kinds:
        return None
    return {(v, k) for v in versions for k in kinds}


def _guard_plan(hba: HbaFile) -> tuple[int, dict[int, list[str]]]:
    """Where the guard goes (line index, or len(lines) for the end) and which databases each family lacks."""
    covered: set[tuple[int, str]] = set()
    stop = len(hba.lines)
    for idx, ln in enumerate(hba.lines):
        if isinstance(ln, HbaInclude):
            stop = idx
            break
        if isinstance(ln, HbaRule) and ln.is_tcp:
            cov = _guard_coverage(ln)
            if cov is None:
                stop = idx
                break
            covered |= cov
    # Keep a rule's own comment block ("# IPv4 local connections:") attached to it.
    while (
        stop < len(hba.lines)
        and stop > 0
        and isinstance(prev := hba.lines[stop - 1], HbaComment)
        and not prev.is_blank
        and not prev.raw.lstrip().startswith("# TYPE")
    ):
        stop -= 1
    missing: dict[int, list[str]] = {}
    for version in (4, 6):
        kinds = [k for k in ("all", "replication") if (version, k) not in covered]
        if kinds:
            missing[version] = kinds
    return stop, missing


_DEFAULT_COLUMNS = (0, 8, 24, 40, 64)  # initdb's layout


def _guard_lines(hba: HbaFile, stop: int, missing: dict[int, list[str]]) -> list[str]:
    columns: Sequence[int] = _DEFAULT_COLUMNS
    template = next((ln for ln in hba.lines[stop:] if isinstance(ln, HbaRule) and ln.is_tcp), None)
    if template is not None:
        cols = layout_columns(template.raw)
        if cols is not None and len(cols) >= 5:
            method_col = cols[5] if template.netmask is not None else cols[4]
            columns = (*cols[:4], method_col)
    out = [GUARD_MARK]
    for version, kinds in sorted(missing.items()):
        net = "0.0.0.0/0" if version == 4 else "::/0"
        out.append(render_columns(["hostnossl", ",".join(kinds), "all", net, "reject"], columns))
    return out


def require_tls(hba: HbaFile) -> tuple[HbaFile, bool]:
    """Make plaintext TCP connections impossible; returns ``(new, changed)``, idempotent.

    - ``host`` rules that do not ``reject`` become ``hostssl`` (same columns); ``host … reject`` is kept
      since it already refuses both.
    - ``hostnossl`` rules that do not ``reject`` are commented out under ``DISABLED_MARK``.
    - Guard rules ``hostnossl all,replication all 0.0.0.0/0 reject`` and the ``::/0`` twin are inserted under
      ``GUARD_MARK`` before the first TCP rule or include directive, so that no later rule and no included
      file can accept plaintext TCP. ``replication`` is listed because ``all`` does not match physical
      replication connections. The guard also refuses GSSAPI-encrypted connections, which are not TLS.
    - ``local`` rules are never touched, so the administrator keeps socket access.
    """
    stop, missing = _guard_plan(hba)
    eol = dominant_eol([ln.eol for ln in hba.lines])
    chunks: list[str] = []
    changed = False

    def insert_guard() -> None:
        chunks.extend(line + eol for line in _guard_lines(hba, stop, missing))

    for idx, ln in enumerate(hba.lines):
        if idx == stop and missing:
            insert_guard()
            changed = True
        if isinstance(ln, HbaRule) and ln.conn_type is ConnType.HOST and not ln.is_reject:
            chunks.append(edit_line(ln.raw, {0: ConnType.HOSTSSL.value}) + ln.eol)
            changed = True
        elif isinstance(ln, HbaRule) and ln.conn_type is ConnType.HOSTNOSSL and not ln.is_reject:
            chunks.append(DISABLED_MARK + eol)
            chunks.append("#" + ln.raw.replace("\n", "\n#") + ln.eol)
            changed = True
        else:
            chunks.append(ln.raw + ln.eol)
    if stop == len(hba.lines) and missing:
        if chunks and not chunks[-1].endswith("\n"):
            chunks[-1] += eol
        insert_guard()
        changed = True
    if not changed:
        return hba, False
    return parse_hba("".join(chunks), hba.path), True


def set_client_auth(
    hba: HbaFile,
    mode: Literal["none", "verify-full", "cert"],
    map_name: str | None = None,
) -> tuple[HbaFile, bool]:
    """Require client certificates on ``hostssl`` rules that use a password method; idempotent.

    ``verify-full`` adds ``clientcert=verify-full`` (upgrading ``verify-ca``) and keeps the password check;
    ``cert`` replaces the method with ``cert`` (plus ``map=NAME``), dropping any ``clientcert`` option since
    ``cert`` implies it; ``none`` changes nothing. Replication rules are treated alike; ``host``,
    ``hostnossl``, ``local`` and non-password rules are left alone (run ``require_tls`` first). ``map_name``
    is only valid with ``cert``: PostgreSQL refuses ``map`` with password methods.
    """
    if mode not in ("none", "verify-full", "cert"):
        raise ValueError(f"unknown client authentication mode {mode!r}")
    if map_name is not None and mode != "cert":
        raise ValueError("map_name only applies to mode 'cert'")
    if mode == "none":
        return hba, False
    chunks: list[str] = []
    changed = False
    for ln in hba.lines:
        if not (
            isinstance(ln, HbaRule) and ln.conn_type is ConnType.HOSTSSL and ln.method in PASSWORD_METHODS
        ):
            chunks.append(ln.raw + ln.eol)
            continue
        toks = tokenize(ln.raw, ln.lineno, hba.path).tokens
        method_idx = next(i for i, t in enumerate(toks) if t.field == (5 if ln.netmask is not None else 4))
        cert_idx = [i for i, t in enumerate(toks) if i > method_idx and t.value.startswith("clientcert=")]
        edits: dict[int, str | None] = {}
        append: list[str] = []
        if mode == "verify-full":
            if ln.option("clientcert") == "verify-full":
                chunks.append(ln.raw + ln.eol)
                continue
            if cert_idx:
                edits = {i: None for i in cert_idx[:-1]}
                edits[cert_idx[-1]] = "clientcert=verify-full"
            else:
                append.append("clientcert=verify-full")
        else:
            edits = {method_idx: "cert", **{i: None for i in cert_idx}}
            if map_name is not None:
                append.append(f"map={quote_token(map_name)}")
        chunks.append(edit_line(ln.raw, edits, append) + ln.eol)
        changed = True
    if not changed:
        return hba, False
    return parse_hba("".join(chunks), hba.path), True


# --- lint -----------------------------------------------------------------------------------------


def _tok_key(token: str) -> tuple[str, str]:
    value = token_value(token)
    if not token.startswith('"'):
        if value == "samegroup":
            return ("kw", "samerole")
        if value in _DB_KEYWORDS:
            return ("kw", value)
        if value.startswith("@") and len(value) > 1:
            return ("file", value)
        if value.startswith("+") or value.startswith("/"):
            return ("special", value)
    return ("name", value)


def _databases_cover(a: Sequence[str], b: Sequence[str]) -> bool:
    a_keys = {_tok_key(t) for t in a}
    a_all = ("kw", "all") in a_keys
    for key in (_tok_key(t) for t in b):
        if key in a_keys:
            continue
        # "all" matches every database by name (and sameuser/samerole/regex pick names) but never a physical
        # replication connection, and we cannot know what an @file holds.
        if a_all and key != ("kw", "replication") and key[0] != "file":
            continue
        return False
    return True


def _users_cover(a: Sequence[str], b: Sequence[str]) -> bool:
    a_keys = {_tok_key(t) for t in a}
    if ("kw", "all") in a_keys:
        return True
    return all(_tok_key(t) in a_keys for t in b)


def _network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "/" not in address:
        return None
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


def _address_covers(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a == "all" or a == b:
        return True
    if a == "samenet" and b == "samehost":
        return True
    net_a, net_b = _network(a), _network(b)
    # IPv4 entries never match IPv6 connections and vice versa, even for IPv4-mapped addresses.
    return (
        net_a is not None and net_b is not None and net_a.version == net_b.version and net_b.subnet_of(net_a)  # type: ignore[arg-type]
    )


def _covers(a: HbaRule, b: HbaRule) -> bool:
    """Whether every connection that could match ``b`` matches ``a`` (only claimed when certain)."""
    return (
        _TRANSPORTS[b.conn_type] <= _TRANSPORTS[a.conn_type]
        and _databases_cover(a.databases, b.databases)
        and _users_cover(a.users, b.users)
        and _address_covers(a.address, b.address)
    )


def shadowing_rule(rules: Iterable[HbaRule], rule: HbaRule) -> HbaRule | None:
    """The first rule before ``rule`` that catches every connection ``rule`` could match, if any."""
    for earlier in rules:
        if earlier.lineno >= rule.lineno:
            return None
        if _covers(earlier, rule):
            return earlier
    return None


def _is_open_address(address: str | None) -> bool:
    if address == "all":
        return True
    net = _network(address or "")
    return net is not None and net.prefixlen == 0


def _lint_finding(id_: str, severity: Severity, lineno: int, title: str, detail: str) -> Finding:
    return Finding(id_, severity, title, detail, lineno=lineno)


def lint(hba: HbaFile) -> list[Finding]:
    """Security findings for one pg_hba.conf, ordered by line then severity.

    Included files and ``@file`` lists are not read; an ``info`` finding says so.
    """
    findings: list[Finding] = []
    rules = hba.rules
    for ln in hba.lines:
        if isinstance(ln, HbaInclude):
            findings.append(
                _lint_finding(
                    "hba-include-not-checked",
                    "info",
                    ln.lineno,
                    f"{ln.kind.value} {ln.path}: rules in included files are not checked",
                    "The rules read from there take effect at this point in the file.",
                )
            )
        if not isinstance(ln, HbaRule):
            continue
        findings.extend(_rule_findings(rules, ln))
    findings.sort(key=lambda f: (f.lineno or 0, severity_rank(f.severity), f.id))
    return findings


def _rule_findings(rules: Sequence[HbaRule], rule: HbaRule) -> list[Finding]:
    out: list[Finding] = []
    n = rule.lineno
    shadow = shadowing_rule(rules, rule)
    if shadow is not None:
        if shadow.conn_type is ConnType.HOST and not shadow.is_reject and rule.conn_type is ConnType.HOSTSSL:
            out.append(
                _lint_finding(
                    "hba-host-above-hostssl",
                    "high",
                    n,
                    f"host … {shadow.method} above hostssl keeps plaintext open",
                    f"The host rule on line {shadow.lineno} matches TLS and plaintext connections alike and "
                    f"comes first, so this hostssl rule never applies: every client it was meant for is "
                    f"accepted by line {shadow.lineno} instead, with or without TLS. Change line "
                    f"{shadow.lineno} to hostssl (pgbatten secure does) or remove it.",
                )
            )
        else:
            out.append(
                _lint_finding(
                    "hba-shadowed-rule",
                    "medium",
                    n,
                    "rule can never match",
                    f"Line {shadow.lineno} ({shadow.conn_type.value} … {shadow.method}) comes first and "
                    "catches every connection this rule could match; PostgreSQL uses the first matching "
                    "rule only.",
                )
            )
        return out  # the rule's own weaknesses do not matter while it is dead
    files = [t for t in (*rule.databases, *rule.users) if _tok_key(t)[0] == "file"]
    if files:
        out.append(
            _lint_finding(
                "hba-file-list-not-checked",
                "info",
                n,
                f"names read from {', '.join(files)} are not checked",
                "Shadowing involving this rule is only reported when certain.",
            )
        )
    if not rule.is_tcp:
        if rule.method == "md5":
            out.append(_md5(n))
        return out
    accepts = not rule.is_reject
    if accepts and "plain" in _TRANSPORTS[rule.conn_type]:
        out.append(
            _lint_finding(
                "hba-plaintext-accepted",
                "high",
                n,
                f"{rule.conn_type.value} rule accepts TCP connections without TLS",
                f"A {rule.conn_type.value} rule matches unencrypted connections, so everything after the "
                f"handshake, including the {rule.method} exchange and all query traffic, can be read and "
                "altered on the network. Use hostssl (pgbatten secure rewrites host rules and adds a "
                "hostnossl … reject guard).",
            )
        )
    if rule.conn_type is ConnType.HOSTGSSENC and accepts:
        out.append(
            _lint_finding(
                "hba-gss-not-tls",
                "info",
                n,
                "hostgssenc rule: encrypted with GSSAPI, not TLS",
                "Clients are protected by GSSAPI encryption here; TLS-only policies will refuse them.",
            )
        )
    if rule.method == "trust":
        out.append(
            _lint_finding(
                "hba-trust-tcp",
                "high",
                n,
                "trust over TCP: anyone who can reach the port logs in without a password",
                "trust performs no authentication at all; over TCP that includes other hosts. Use "
                "scram-sha-256 or cert.",
            )
        )
    if rule.method == "password":
        out.append(
            _lint_finding(
                "hba-password-cleartext",
                "high",
                n,
                "password method sends the password in cleartext",
                "The server receives the password itself; without TLS it crosses the network readable. "
                "Use scram-sha-256.",
            )
        )
    if rule.method == "md5":
        out.append(_md5(n))
    if rule.method == "ident":
        out.append(
            _lint_finding(
                "hba-ident-tcp",
                "high",
                n,
                "ident over TCP trusts the client machine's ident server",
                "The user name comes from an ident server on the client host, which whoever controls "
                "that host controls. Use scram-sha-256 or cert.",
            )
        )
    if accepts and _is_open_address(rule.address):
        strong = rule.method == "cert" or rule.option("clientcert") == "verify-full"
        out.append(
            _lint_finding(
                "hba-open-address",
                "info" if strong else "low",
                n,
                f"accepts connections from any address ({rule.address})",
                "Narrow the address to the networks clients really come from.",
            )
        )
    return out


def _md5(lineno: int) -> Finding:
    return _lint_finding(
        "hba-md5",
        "medium",
        lineno,
        "md5 authentication: prefer scram-sha-256",
        "An MD5 hash stored on the server is enough to log in, and the exchange is weaker than SCRAM. "
        "Set password_encryption = scram-sha-256, reset passwords, then switch the method.",
    )
