"""Pure analysis: :class:`~pgbatten.audit.facts.ServerFacts` in, findings out. No I/O.

pg_hba.conf is judged as a whole by :mod:`pgbatten.audit.hba_findings`; the settings, the roles' password
hashes and the key file here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from pgbatten.audit.ciphers import Expander, judge_ciphers
from pgbatten.audit.facts import KeyFileStat, ServerFacts
from pgbatten.audit.hba_findings import clientcert_used, hba_findings
from pgbatten.audit.wording import CIS, finding, name_list, secure_command
from pgbatten.findings import SEVERITY_ORDER, Finding, Severity
from pgbatten.pgconf.guc_values import parse_bool

__all__ = [
    "analyze",
    "key_file_findings",
    "role_findings",
    "settings_findings",
]

_LISTEN_ALL = frozenset({"*", "0.0.0.0", "::"})  # noqa: S104 - values we look for, not bind to


def _on(value: str | None) -> bool:
    return parse_bool(value or "") is True


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
    secure_cmd = secure_command(settings)
    ssl_setting = settings.get("ssl")
    if ssl_setting is not None and not _on(ssl_setting):
        out.append(
            finding(
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
            finding(
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
            finding(
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
            finding(
                "server-tls-min-version",
                "high" if minimum in ("", "TLSv1") else "medium",
                f"ssl_min_protocol_version = {shown}: TLS older than 1.2 is allowed",
                "TLS 1.0 and 1.1 are deprecated (RFC 8996): no AEAD suites, and TLS 1.0's CBC mode is open "
                "to BEAST.",
                secure_command(settings, "--tls-min 1.2"),
                CIS["tls-versions"],
            )
        )
    maximum = settings.get("ssl_max_protocol_version")
    if maximum and maximum != "TLSv1.3":
        out.append(
            finding(
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
                finding(
                    f"server-{name.replace('_', '-')}-missing",
                    "high",
                    f"{name} {'is empty' if not value else f'= {value} does not exist'}",
                    f"With ssl = on the server needs its {what} at start and at every reload; a reload "
                    "without it keeps the previous TLS configuration, a restart fails.",
                    secure_command(settings),
                    CIS["tls-enabled"],
                )
            )
    if clientcert_used:
        ca = settings.get("ssl_ca_file")
        if ca is not None and (not ca or exist.get("ssl_ca_file") is False):
            out.append(
                finding(
                    "server-ssl-ca-file-missing",
                    "high",
                    "Client certificates are required but ssl_ca_file is "
                    + ("empty" if not ca else f"{ca}, which does not exist"),
                    "pg_hba.conf uses clientcert or the cert method, and the server verifies client "
                    "certificates against ssl_ca_file; without it those logins all fail.",
                    secure_command(settings),
                    CIS["tls-enabled"],
                )
            )
        if not settings.get("ssl_crl_file") and not settings.get("ssl_crl_dir"):
            out.append(
                finding(
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
            finding(
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
            finding(
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
        parts.append(f"broken (no encryption, no authentication, RC4 or DES): {name_list(verdict.broken)}")
    if verdict.not_forward_secret:
        parts.append(
            f"{len(verdict.not_forward_secret)} without forward secrecy (a stolen key decrypts "
            f"recorded traffic): {name_list(verdict.not_forward_secret)}"
        )
    if verdict.not_aead:
        parts.append(f"{len(verdict.not_aead)} CBC/non-AEAD: {name_list(verdict.not_aead)}")
    return [
        finding(
            "server-ssl-ciphers-weak",
            "high" if verdict.broken else "medium",
            f"ssl_ciphers allows {len(verdict.weak)} TLS 1.2 suites that are not forward-secret AEAD",
            f"ssl_ciphers = {ciphers!r} enables, as expanded by {verdict.judged_by}: "
            + "; ".join(parts)
            + ".",
            secure_command(settings) + " (Mozilla intermediate: ECDHE/DHE with AES-GCM or ChaCha20 only)",
            CIS["ciphers"],
        )
    ]


# --------------------------------------------------------------------------------------- roles, key


def role_findings(md5_roles: Sequence[str] | None) -> list[Finding]:
    """Roles whose stored password is still an MD5 hash."""
    if not md5_roles:
        return []
    return [
        finding(
            "server-md5-passwords",
            "medium",
            f"{len(md5_roles)} role(s) still have an MD5 password hash",
            f"Roles: {name_list(list(md5_roles))}. An MD5 hash is as good as the password for the md5 "
            "method, "
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
            finding(
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
        finding(
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
    return finding(
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
