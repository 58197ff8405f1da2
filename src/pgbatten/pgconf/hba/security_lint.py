"""The security lint of one pg_hba.conf: each rule judged where first-match lets it act.

A dead rule (see ``matching``) gets one finding saying what shadows it and nothing else; a live rule is
judged by its type, method and address. Included files and ``@file`` lists are not read. One pass over the
file after ``matching.shadows``; the texts that only depend on a rule's type and method are built once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from itertools import pairwise

from pgbatten.findings import Finding, Severity, severity_rank
from pgbatten.pgconf._bulk import gc_paused
from pgbatten.pgconf.hba.matching import TRANSPORTS, is_open_address, name_key, shadows
from pgbatten.pgconf.hba.syntax import ConnType, HbaFile, HbaInclude, HbaRule

__all__ = ["lint"]


def _lint_finding(id_: str, severity: Severity, lineno: int, title: str, detail: str) -> Finding:
    return Finding(id_, severity, title, detail, lineno=lineno)


@gc_paused
def lint(hba: HbaFile, *, dead: Sequence[HbaRule | None] | None = None) -> list[Finding]:
    """Security findings for one pg_hba.conf, ordered by line then severity.

    Included files and ``@file`` lists are not read; an ``info`` finding says so. ``dead`` is
    ``matching.shadows(hba.rules)`` if the caller has it already.
    """
    findings: list[Finding] = []
    rules = hba.rules
    shadow_of = iter(shadows(rules) if dead is None else dead)
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
        found = _rule_findings(ln, next(shadow_of))
        if len(found) > 1:
            found.sort(key=_order)
        findings.extend(found)
    if any(_order(a) > _order(b) for a, b in pairwise(findings)):
        findings.sort(key=_order)  # lines out of file order (hand-built input)
    return findings


def _order(f: Finding) -> tuple[int, int, str]:
    return (f.lineno or 0, severity_rank(f.severity), f.id)


def _rule_findings(rule: HbaRule, shadow: HbaRule | None) -> list[Finding]:
    out: list[Finding] = []
    n = rule.lineno
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
    files = [t for t in (*rule.databases, *rule.users) if t[:1] == "@" and name_key(t)[0] == "file"]
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
            _lint_finding("hba-plaintext-accepted", "high", n, *_plaintext_texts(rule.conn_type, rule.method))
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
            _lint_finding("hba-open-address", "info" if strong else "low", n, *_open_texts(rule.address))
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


@cache
def _plaintext_texts(conn: ConnType, method: str) -> tuple[str, str]:
    return (
        f"{conn.value} rule accepts TCP connections without TLS",
        f"A {conn.value} rule matches unencrypted connections, so everything after the "
        f"handshake, including the {method} exchange and all query traffic, can be read and "
        "altered on the network. Use hostssl (pgbatten secure rewrites host rules and adds a "
        "hostnossl … reject guard).",
    )


@cache
def _open_texts(address: str | None) -> tuple[str, str]:
    return (
        f"accepts connections from any address ({address})",
        "Narrow the address to the networks clients really come from.",
    )
