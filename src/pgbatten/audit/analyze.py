"""Pure analysis: :class:`~pgbatten.audit.facts.ServerFacts` in, findings out. No I/O.

pg_hba.conf is judged as a whole with the same model and lint as ``pgbatten secure`` (first match wins, so
a rule is only weak if it can actually match); the lint's ids reappear here with a ``server-`` prefix.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Mapping, Sequence

from pgbatten.audit.ciphers import Expander, judge_ciphers
from pgbatten.audit.facts import HbaRow, KeyFileStat, RoleRow, ServerFacts
from pgbatten.findings import SEVERITY_ORDER, Finding, Severity, secure_fix
from pgbatten.pgconf.hba import ConnType, HbaFile, HbaRule, lint, shadows, token_value
from pgbatten.probe.findings import CIS_CIPHERS, CIS_OLD_TLS, CIS_TLS

__all__ = [
    "CIS",
    "analyze",
    "clientcert_used",
    "hba_findings",
    "hba_rules_from_rows",
    "key_file_findings",
    "role_findings",
    "settings_findings",
]

# CIS PostgreSQL Benchmark references, in the wording the remote check uses for the same sections.
CIS = {
    "tls-enabled": CIS_TLS,
    "tls-versions": CIS_OLD_TLS,
    "ciphers": CIS_CIPHERS,
    "host-login": (
        'CIS PostgreSQL 17 Benchmark 5.4: Ensure login via "host" TCP/IP Socket is configured correctly'
    ),
}

_CLIENTCERT = frozenset({"verify-ca", "verify-full"})
_LISTEN_ALL = frozenset({"*", "0.0.0.0", "::"})  # noqa: S104 - values we look for, not bind to
_MAX_NAMES = 20


def _finding(
    id: str,
    severity: Severity,
    title: str,
    detail: str,
    fix: str | None,
    cis: str | None = None,
) -> Finding:
    return Finding(id=id, severity=severity, title=title, detail=detail, fix=fix, cis=cis)


def _secure_cmd(settings: Mapping[str, str], *extra: str) -> str:
    return secure_fix(*extra, pgdata=settings.get("data_directory"))


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def _on(value: str | None) -> bool:
    return (value or "").lower() in ("on", "true", "yes", "1")


# --------------------------------------------------------------------------------------- settings


def settings_findings(
    settings: Mapping[str, str],
    *,
    files_exist: Mapping[str, bool] | None = None,
    clientcert_used: bool = False,
    expand: Expander | None = None,
) -> list[Finding]:
    """ssl, protocol versions, ciphers, certificate files, password_encryption and listen_addresses."""
    out: list[Finding] = []
    exist = files_exist or {}
    secure_cmd = _secure_cmd(settings)
    ssl_setting = settings.get("ssl")
    if ssl_setting is not None and not _on(ssl_setting):
        out.append(
            _finding(
                "server-ssl-off",
                "critical",
                "ssl = off: every TCP connection is plaintext",
                "The server cannot do TLS at all, so passwords, queries and results cross the network "
                "readable and alterable, whatever pg_hba.conf says (hostssl rules never match).",
                secure_cmd,
                CIS["tls-enabled"],
            )
        )
    if _on(ssl_setting):
        out.extend(_tls_setting_findings(settings, exist, clientcert_used, expand))
    if settings.get("password_encryption", "").lower() == "md5":
        out.append(
            _finding(
                "server-password-encryption-md5",
                "medium",
                "password_encryption = md5: new passwords are stored as MD5 hashes",
                "Every password set from now on is stored as an MD5 hash, which is enough to log in with "
                "the md5 method and keeps roles from moving to scram-sha-256.",
                f"{secure_cmd} (sets password_encryption = scram-sha-256), or ALTER SYSTEM SET "
                "password_encryption = 'scram-sha-256'; SELECT pg_reload_conf();",
            )
        )
    listen = {a.strip() for a in settings.get("listen_addresses", "").split(",")}
    if listen & _LISTEN_ALL:
        out.append(
            _finding(
                "server-listen-all-interfaces",
                "low",
                f"listen_addresses = '{settings.get('listen_addresses')}': the server listens on every "
                "interface",
                "Any network that reaches this machine reaches the login prompt; pg_hba.conf is then the "
                "only barrier.",
                "set listen_addresses to the addresses clients use (a restart is needed)",
            )
        )
    return out


def _tls_setting_findings(
    settings: Mapping[str, str],
    exist: Mapping[str, bool],
    clientcert_used: bool,
    expand: Expander | None,
) -> list[Finding]:
    out: list[Finding] = []
    minimum = settings.get("ssl_min_protocol_version")
    if minimum is not None and minimum in ("", "TLSv1", "TLSv1.1"):
        shown = minimum or "(none)"
        out.append(
            _finding(
                "server-tls-min-version",
                "high" if minimum in ("", "TLSv1") else "medium",
                f"ssl_min_protocol_version = {shown}: TLS older than 1.2 is allowed",
                "TLS 1.0 and 1.1 are deprecated (RFC 8996): no AEAD suites, and TLS 1.0's CBC mode is open "
                "to BEAST.",
                _secure_cmd(settings, "--tls-min 1.2"),
                CIS["tls-versions"],
            )
        )
    maximum = settings.get("ssl_max_protocol_version")
    if maximum and maximum != "TLSv1.3":
        out.append(
            _finding(
                "server-tls13-disabled",
                "low",
                f"ssl_max_protocol_version = {maximum}: TLS 1.3 is refused",
                "TLS 1.3 has only forward-secret AEAD suites and a faster handshake.",
                "ALTER SYSTEM RESET ssl_max_protocol_version; SELECT pg_reload_conf();",
            )
        )
    ciphers = settings.get("ssl_ciphers")
    if ciphers is not None:
        out.extend(_cipher_findings(settings, ciphers, expand))
    for name, what in (("ssl_cert_file", "certificate"), ("ssl_key_file", "private key")):
        value = settings.get(name)
        if value is None:
            continue
        if not value or exist.get(name) is False:
            out.append(
                _finding(
                    f"server-{name.replace('_', '-')}-missing",
                    "high",
                    f"{name} {'is empty' if not value else f'= {value} does not exist'}",
                    f"With ssl = on the server needs its {what} at start and at every reload; a reload "
                    "without it keeps the previous TLS configuration, a restart fails.",
                    _secure_cmd(settings),
                    CIS["tls-enabled"],
                )
            )
    if clientcert_used:
        ca = settings.get("ssl_ca_file")
        if ca is not None and (not ca or exist.get("ssl_ca_file") is False):
            out.append(
                _finding(
                    "server-ssl-ca-file-missing",
                    "high",
                    "Client certificates are required but ssl_ca_file is "
                    + ("empty" if not ca else f"{ca}, which does not exist"),
                    "pg_hba.conf uses clientcert or the cert method, and the server verifies client "
                    "certificates against ssl_ca_file; without it those logins all fail.",
                    _secure_cmd(settings),
                    CIS["tls-enabled"],
                )
            )
        if not settings.get("ssl_crl_file") and not settings.get("ssl_crl_dir"):
            out.append(
                _finding(
                    "server-ssl-crl-missing",
                    "low",
                    "Client certificates are required but no CRL is configured",
                    "Neither ssl_crl_file nor ssl_crl_dir is set, so a revoked client certificate keeps "
                    "working until it expires.",
                    "set ssl_crl_file to the CA's CRL and SELECT pg_reload_conf();",
                )
            )
    command = settings.get("ssl_passphrase_command")
    if command:
        reloadable = _on(settings.get("ssl_passphrase_command_supports_reload"))
        out.append(
            _finding(
                "server-ssl-passphrase-command",
                "info" if reloadable else "low",
                "The server key is passphrase-protected (ssl_passphrase_command)",
                "The passphrase comes from ssl_passphrase_command. "
                + (
                    "It is re-run on reload."
                    if reloadable
                    else "ssl_passphrase_command_supports_reload is off, so a reload cannot load a new "
                    "key: rotating the certificate needs a restart."
                ),
                None,
            )
        )
    return out


def _cipher_findings(settings: Mapping[str, str], ciphers: str, expand: Expander | None) -> list[Finding]:
    verdict = judge_ciphers(ciphers, expand)
    if verdict.error is not None:
        return [
            _finding(
                "server-ssl-ciphers-unjudged",
                "info",
                "ssl_ciphers could not be judged",
                f"{verdict.judged_by} selects no suite from {ciphers!r} ({verdict.error}); the server's "
                "OpenSSL may read it differently.",
                None,
            )
        ]
    if not verdict.weak:
        return []
    parts = []
    if verdict.broken:
        parts.append(f"broken (no encryption, no authentication, RC4 or DES): {_names(verdict.broken)}")
    if verdict.not_forward_secret:
        parts.append(
            f"{len(verdict.not_forward_secret)} without forward secrecy (a stolen key decrypts "
            f"recorded traffic): {_names(verdict.not_forward_secret)}"
        )
    if verdict.not_aead:
        parts.append(f"{len(verdict.not_aead)} CBC/non-AEAD: {_names(verdict.not_aead)}")
    return [
        _finding(
            "server-ssl-ciphers-weak",
            "high" if verdict.broken else "medium",
            f"ssl_ciphers allows {len(verdict.weak)} TLS 1.2 suites that are not forward-secret AEAD",
            f"ssl_ciphers = {ciphers!r} enables, as expanded by {verdict.judged_by}: "
            + "; ".join(parts)
            + ".",
            _secure_cmd(settings) + " (Mozilla intermediate: ECDHE/DHE with AES-GCM or ChaCha20 only)",
            CIS["ciphers"],
        )
    ]


# --------------------------------------------------------------------------------------- pg_hba


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
    secure_cmd = _secure_cmd(settings)
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
                _finding(
                    "server-hba-rule-cannot-match",
                    "low",
                    f"{row.where}: this rule cannot match",
                    f"{row.text()} — {row.error}.",
                    "turn on what the rule needs (pgbatten secure turns on ssl), or remove the rule",
                )
            )
        elif row.error is not None:
            out.append(
                _finding(
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
            _finding(
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
                _finding(
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
            who = _names(superusers) if all_users and superusers else _names(named) or "every superuser"
            out.append(
                _finding(
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


# --------------------------------------------------------------------------------------- roles, key


def role_findings(md5_roles: Sequence[str] | None) -> list[Finding]:
    """Roles whose stored password is still an MD5 hash."""
    if not md5_roles:
        return []
    return [
        _finding(
            "server-md5-passwords",
            "medium",
            f"{len(md5_roles)} role(s) still have an MD5 password hash",
            f"Roles: {_names(list(md5_roles))}. An MD5 hash is as good as the password for the md5 method, "
            "and these roles cannot log in with scram-sha-256 until their passwords are set again: they "
            "block moving pg_hba.conf to scram-sha-256.",
            "SET password_encryption = 'scram-sha-256'; then \\password NAME in psql (or ALTER ROLE NAME "
            "PASSWORD '...') for each role listed; pgbatten secure sets password_encryption too",
        )
    ]


def key_file_findings(
    key: KeyFileStat | None, note: str | None, settings: Mapping[str, str]
) -> list[Finding]:
    """Mode and owner of the server's private key, as PostgreSQL itself requires them."""
    if not _on(settings.get("ssl")):
        return []
    if key is None:
        return [
            _finding(
                "server-key-file-not-checked",
                "info",
                "Permissions of the server key were not checked",
                note or "The key file is only checked when the server runs on this machine.",
                None,
            )
        ]
    mode = key.mode & 0o777
    by_server = key.server_uid is not None and key.uid == key.server_uid
    by_root = key.uid == 0
    problems: list[str] = []
    severity: Severity = "medium"
    if not (by_server or by_root):
        problems.append(f"owned by {key.owner}, neither the server's OS user ({key.server_owner}) nor root")
        severity = "high"
    if mode & 0o007:
        problems.append(f"readable or writable by every OS user (mode {mode:04o})")
        severity = "high"
    elif by_root and mode & 0o030:
        problems.append(f"group-writable or -executable (mode {mode:04o})")
    elif not by_root and mode & 0o070:
        problems.append(f"accessible to the group (mode {mode:04o})")
    if not problems:
        return []
    return [
        _finding(
            "server-key-file-permissions",
            severity,
            f"The server's private key {key.path} is {problems[0]}",
            "; ".join(problems) + ". PostgreSQL refuses such a key at the next start or reload (0600 owned "
            "by the server's user, or 0640 owned by root), and anyone who can read it can impersonate the "
            "server.",
            f"chown {key.server_owner or 'postgres'} {shlex.quote(key.path)} && chmod 0600 "
            f"{shlex.quote(key.path)}",
        )
    ]


# --------------------------------------------------------------------------------------- all


def _privilege_finding(unreadable: Sequence[str]) -> Finding:
    return _finding(
        "server-audit-insufficient-privilege",
        "low",
        "Not everything could be audited with this role",
        "Not readable: " + "; ".join(unreadable) + ".",
        "audit as a superuser, or grant what is missing: GRANT pg_read_all_settings TO role; GRANT SELECT "
        "ON pg_hba_file_rules TO role; GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO role; (MD5 "
        "password hashes in pg_authid are superuser-only)",
    )


def analyze(facts: ServerFacts, *, expand: Expander | None = None) -> tuple[Finding, ...]:
    """Every finding for ``facts``, worst first (stable within a severity)."""
    settings = facts.settings
    out: list[Finding] = []
    uses_cert = facts.hba_rows is not None and clientcert_used(facts.hba_rows)
    out.extend(
        settings_findings(settings, files_exist=facts.files_exist, clientcert_used=uses_cert, expand=expand)
    )
    if facts.hba_rows is not None:
        out.extend(hba_findings(facts.hba_rows, settings, facts.roles))
    out.extend(role_findings(facts.md5_roles))
    out.extend(key_file_findings(facts.key_stat, facts.key_stat_note, settings))
    if facts.unreadable:
        out.append(_privilege_finding(facts.unreadable))
    order = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    return tuple(sorted(out, key=lambda f: order[f.severity]))
