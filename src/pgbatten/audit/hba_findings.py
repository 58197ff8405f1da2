"""pg_hba.conf as the server reads it, judged with the same model and lint as ``pgbatten secure``: first
match wins, so a rule is only weak if it can actually match; the lint's ids reappear with a ``server-``
prefix. Pure: rows in, findings out."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from pgbatten.audit.facts import HbaRow, RoleRow
from pgbatten.audit.wording import CIS, finding, name_list, secure_command
from pgbatten.findings import Finding
from pgbatten.pgconf.hba import ConnType, HbaFile, HbaRule, lint, shadows, token_value

_CLIENTCERT = frozenset({"verify-ca", "verify-full"})


def _normalise_address(address: str | None, netmask: str | None) -> str | None:
    if address is None or not netmask:
        return address
    try:
        addr = ipaddress.ip_address(address)
        mask = ipaddress.ip_address(netmask)
    except ValueError:
        return address
    bits = format(int(mask), f"0{mask.max_prefixlen}b")
    if mask.version != addr.version or "01" in bits:
        return f"{address}/{netmask}"  # a non-prefix mask: legal but never "covers" anything in the lint
    return f"{address}/{bits.count('1')}"


def _option_pair(option: str) -> tuple[str, str]:
    name, _, value = option.partition("=")
    return name, value


def hba_rules_from_rows(rows: Iterable[HbaRow]) -> list[tuple[HbaRule, HbaRow]]:
    """The view's rows as lint-ready rules, numbered by evaluation order (files included in order).

    Unparseable rows (``error`` set and no method), or of a type this model does not know, are left out:
    PostgreSQL loads no rule from a file with such an error anyway (reported separately).
    """
    out: list[tuple[HbaRule, HbaRow]] = []
    for row in rows:
        # A row with an error and no method is a line PostgreSQL could not parse; one with a method was
        # loaded with a warning and still takes part in first-match.
        if row.type is None or row.auth_method is None:
            continue
        try:
            conn = ConnType(row.type)
        except ValueError:
            continue
        rule = HbaRule(
            lineno=len(out) + 1,
            raw=row.text(),
            eol="\n",
            conn_type=conn,
            # The view shows names unquoted; a bare keyword is taken as the keyword, which is what it
            # almost always is.
            databases=row.database,
            users=row.user_name,
            address=None if conn is ConnType.LOCAL else _normalise_address(row.address, row.netmask),
            method=row.auth_method,
            options=tuple(_option_pair(o) for o in row.options),
            netmask=row.netmask,
        )
        out.append((rule, row))
    return out


def _is_loopback_only(address: str | None) -> bool:
    if address in ("samehost",):
        return True
    if address in ("localhost",):
        return True
    try:
        net = ipaddress.ip_network(address or "", strict=False)
    except ValueError:
        return False
    return net.network_address.is_loopback and net.broadcast_address.is_loopback


def _uses_clientcert(rule: HbaRule) -> bool:
    return rule.method == "cert" or rule.option("clientcert") in _CLIENTCERT


def clientcert_used(rows: Iterable[HbaRow]) -> bool:
    """Whether any rule asks for a client certificate (so ssl_ca_file must be set)."""
    return any(_uses_clientcert(rule) for rule, _ in hba_rules_from_rows(rows))


def _hba_fix(lint_id: str, where: str, settings: Mapping[str, str]) -> str:
    secure_cmd = secure_command(settings)
    reload = "then SELECT pg_reload_conf();"
    return {
        "hba-plaintext-accepted": secure_cmd,
        "hba-host-above-hostssl": secure_cmd,
        "hba-trust-tcp": f"change the method on {where} to scram-sha-256 (or cert), {reload}",
        "hba-password-cleartext": f"change the method on {where} to scram-sha-256, {reload}",
        "hba-ident-tcp": f"change the method on {where} to scram-sha-256 (or cert), {reload}",
        "hba-md5": "SET password_encryption = 'scram-sha-256', reset each md5 password (\\password NAME), "
        f"then change the method on {where} to scram-sha-256 and SELECT pg_reload_conf();",
        "hba-shadowed-rule": f"remove {where}, or move it above the rule that catches its connections",
        "hba-open-address": f"narrow the address on {where} to the networks clients come from",
    }.get(lint_id, f"review {where}")


_HBA_CIS = {
    "hba-plaintext-accepted": CIS["tls-enabled"],
    "hba-host-above-hostssl": CIS["tls-enabled"],
    "hba-trust-tcp": CIS["host-login"],
    "hba-password-cleartext": CIS["host-login"],
    "hba-ident-tcp": CIS["host-login"],
    "hba-md5": CIS["host-login"],
}


def hba_findings(
    rows: Sequence[HbaRow],
    settings: Mapping[str, str],
    roles: Sequence[RoleRow] | None = None,
) -> list[Finding]:
    """pg_hba_file_rules as a whole: errors, the pgconf lint, ``all``/``all`` and superusers over TCP."""
    out: list[Finding] = []
    for row in rows:
        if row.error is not None and row.auth_method is not None:
            # The server loaded the rule and only warns (hostssl while ssl = off, hostgssenc without GSSAPI).
            out.append(
                finding(
                    "server-hba-rule-cannot-match",
                    "low",
                    f"{row.where}: this rule cannot match",
                    f"{row.text()} — {row.error}.",
                    "turn on what the rule needs (pgbatten secure turns on ssl), or remove the rule",
                )
            )
        elif row.error is not None:
            out.append(
                finding(
                    "server-hba-error",
                    "high",
                    f"{row.where}: PostgreSQL cannot parse this line",
                    f"{row.error}. While the file on disk has an error a reload keeps the previous rules in "
                    "force and a restart fails; pg_hba_file_rules shows the file on disk, which may not be "
                    "the rules in force.",
                    f"fix {row.where} (see the error column of pg_hba_file_rules), then SELECT "
                    "pg_reload_conf();",
                )
            )
    pairs = hba_rules_from_rows(rows)
    rules = [rule for rule, _ in pairs]
    by_number = {rule.lineno: (rule, row) for rule, row in pairs}
    dead = shadows(rules)  # once: both the lint and the broad-rule findings need it
    shadow_of = {rule.lineno: shadow for rule, shadow in zip(rules, dead, strict=True)}
    for lf in lint(HbaFile(lines=tuple(rules)), dead=dead):
        if lf.id.startswith("hba-include") or lf.lineno not in by_number:
            continue  # the view already expands included files
        rule, row = by_number[lf.lineno]
        detail = lf.detail
        shadow = shadow_of[rule.lineno] if lf.id in ("hba-host-above-hostssl", "hba-shadowed-rule") else None
        if shadow is not None:
            shadow_row = by_number[shadow.lineno][1]
            if lf.id == "hba-host-above-hostssl":
                detail = (
                    f"{shadow_row.where} ({shadow_row.text()}) matches TLS and plaintext connections alike "
                    "and comes first, so this hostssl rule never applies: every client it was meant for is "
                    "accepted there instead, with or without TLS."
                )
            else:
                detail = (
                    f"{shadow_row.where} ({shadow_row.text()}) comes first and catches every connection this "
                    "rule could match; PostgreSQL uses the first matching rule only."
                )
        out.append(
            finding(
                "server-" + lf.id,
                lf.severity,
                f"{row.where}: {lf.title}",
                f"{row.text()} — {detail}",
                _hba_fix(lf.id, row.where, settings),
                _HBA_CIS.get(lf.id),
            )
        )
    out.extend(_broad_rule_findings(pairs, shadow_of, roles))
    return out


def _broad_rule_findings(
    pairs: Sequence[tuple[HbaRule, HbaRow]],
    shadow_of: Mapping[int, HbaRule | None],
    roles: Sequence[RoleRow] | None,
) -> list[Finding]:
    out: list[Finding] = []
    superusers = sorted(r.name for r in roles or () if r.superuser and r.can_login)
    for rule, row in pairs:
        if not rule.is_tcp or rule.is_reject or _is_loopback_only(rule.address):
            continue
        if shadow_of[rule.lineno] is not None:
            continue  # a dead rule lets nobody in
        users = {token_value(u) for u in rule.users if not u.startswith('"')}
        quoted = {token_value(u) for u in rule.users if u.startswith('"')}
        all_users = "all" in users
        all_dbs = any(d == "all" for d in rule.databases)
        if all_users and all_dbs:
            out.append(
                finding(
                    "server-hba-all-databases-all-users",
                    "low",
                    f"{row.where}: every role may reach every database from {rule.address}",
                    f"{row.text()} — database all and user all: a leaked password of any role opens any "
                    "database from these addresses.",
                    f"list the databases and roles that really connect from there on {row.where}",
                )
            )
        # "all" always includes the bootstrap superuser, so it is a finding even when roles are unknown.
        named = sorted((users | quoted) & set(superusers))
        if all_users or named:
            who = name_list(superusers) if all_users and superusers else name_list(named) or "every superuser"
            out.append(
                finding(
                    "server-hba-superuser-remote",
                    "medium",
                    f"{row.where}: superusers may log in over TCP from {rule.address}",
                    f"{row.text()} — matches {who}. A superuser can read any file and run any program as "
                    "the server's OS user; remote superuser logins are rarely needed.",
                    f"add 'host all {superusers[0] if superusers else 'postgres'} 0.0.0.0/0 reject' (and "
                    f"::/0) above {row.where}, or name the application roles instead of all; administrators "
                    "keep the local socket",
                )
            )
    return out
