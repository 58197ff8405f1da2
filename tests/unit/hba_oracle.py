"""The pg_hba.conf lint as it was first written: every rule compared with every earlier one.

Kept as the reference the fast lint (``pgbatten.pgconf.hba``) must agree with, finding for finding; it is
quadratic in the number of rules, so only small files go through it. The code is the original, with only
imports and names adjusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from pgbatten.findings import Finding, Severity, severity_rank
from pgbatten.pgconf.hba import ConnType, HbaFile, HbaInclude, HbaRule, token_value

TRANSPORTS: dict[ConnType, frozenset[str]] = {
    ConnType.LOCAL: frozenset({"local"}),
    ConnType.HOST: frozenset({"plain", "ssl", "gss"}),
    ConnType.HOSTSSL: frozenset({"ssl"}),
    ConnType.HOSTNOSSL: frozenset({"plain", "gss"}),
    ConnType.HOSTGSSENC: frozenset({"gss"}),
    ConnType.HOSTNOGSSENC: frozenset({"plain", "ssl"}),
}
_DB_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})


def name_key(token: str) -> tuple[str, str]:
    """What a database or user token stands for: keyword, ``@file``, ``+group`` or ``/regex``, or a name."""
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
    a_keys = {name_key(t) for t in a}
    a_all = ("kw", "all") in a_keys
    for key in (name_key(t) for t in b):
        if key in a_keys:
            continue
        # "all" matches every database by name (and sameuser/samerole/regex pick names) but never a physical
        # replication connection, and we cannot know what an @file holds.
        if a_all and key != ("kw", "replication") and key[0] != "file":
            continue
        return False
    return True


def _users_cover(a: Sequence[str], b: Sequence[str]) -> bool:
    a_keys = {name_key(t) for t in a}
    if ("kw", "all") in a_keys:
        return True
    return all(name_key(t) in a_keys for t in b)


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


def covers(a: HbaRule, b: HbaRule) -> bool:
    """Whether every connection that could match ``b`` matches ``a`` (only claimed when certain)."""
    return (
        TRANSPORTS[b.conn_type] <= TRANSPORTS[a.conn_type]
        and _databases_cover(a.databases, b.databases)
        and _users_cover(a.users, b.users)
        and _address_covers(a.address, b.address)
    )


def shadowing_rule(rules: Iterable[HbaRule], rule: HbaRule) -> HbaRule | None:
    """The first rule before ``rule`` that catches every connection ``rule`` could match, if any."""
    for earlier in rules:
        if earlier.lineno >= rule.lineno:
            return None
        if covers(earlier, rule):
            return earlier
    return None


def is_open_address(address: str | None) -> bool:
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
    files = [t for t in (*rule.databases, *rule.users) if name_key(t)[0] == "file"]
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
    if accepts and "plain" in TRANSPORTS[rule.conn_type]:
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
    if accepts and is_open_address(rule.address):
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
