"""How the audit's findings are worded: the CIS references, the ``pgbatten secure`` command that fixes a
server, and lists of names that stay readable however many there are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pgbatten.findings import Finding, Severity, secure_fix
from pgbatten.probe.findings import CIS_CIPHERS, CIS_OLD_TLS, CIS_TLS

# CIS PostgreSQL Benchmark references, in the wording the remote check uses for the same sections.
CIS = {
    "tls-enabled": CIS_TLS,
    "tls-versions": CIS_OLD_TLS,
    "ciphers": CIS_CIPHERS,
    "host-login": (
        'CIS PostgreSQL 17 Benchmark 5.4: Ensure login via "host" TCP/IP Socket is configured correctly'
    ),
}

MAX_NAMES = 20


def finding(
    id: str,
    severity: Severity,
    title: str,
    detail: str,
    fix: str | None,
    cis: str | None = None,
) -> Finding:
    return Finding(id=id, severity=severity, title=title, detail=detail, fix=fix, cis=cis)


def secure_command(settings: Mapping[str, str], *extra: str) -> str:
    return secure_fix(*extra, pgdata=settings.get("data_directory"))


def name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")
