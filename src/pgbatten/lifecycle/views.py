"""The parts of a status report (frozen data) and the builder that collects findings with their fixes.

Shared by :mod:`.status` (the CA, its CRL, client certificates, a rotation) and :mod:`.status_cluster`
(each cluster). Pure.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import issued_by
from pgbatten.findings import Finding, Severity
from pgbatten.lifecycle.facts import CAFacts, RotationFacts
from pgbatten.lifecycle.timeline import CertState, Level, OverlapStage, Validity, format_duration, worse

EXIT_STATUS: dict[Level, int] = {"ok": 0, "warning": 1, "critical": 2}
_LEVEL_OF: dict[Severity, Level] = {
    "critical": "critical",
    "high": "warning",
    "medium": "warning",
    "low": "ok",
    "info": "ok",
}


def level_of(severity: Severity) -> Level:
    """critical → critical; high and medium → warning; low and info → ok."""
    return _LEVEL_OF[severity]


@dataclass(frozen=True)
class CertificateView:
    """One certificate as status reports it."""

    kind: str  # "ca", "server", "client", "cross"
    name: str
    serial: int
    not_after: dt.datetime
    state: CertState
    level: Level
    renew_at: dt.datetime | None = None
    renew_due: bool = False
    issuer: str = ""
    subject: str = ""
    sans: tuple[str, ...] = ()
    not_before: dt.datetime | None = None
    fingerprint: str = ""
    authority: str = "current"  # "current", "previous" (rotating out), "foreign"
    revoked_at: dt.datetime | None = None
    served: bool | None = None


@dataclass(frozen=True)
class CrlView:
    """One CRL: the CA's latest, or one a cluster has installed."""

    issuer: str
    next_update: dt.datetime | None
    last_update: dt.datetime
    number: int | None
    revoked: int
    level: Level
    resign_at: dt.datetime | None
    resign_due: bool
    path: Path | None = None
    size_bytes: int | None = None
    current: bool | None = None


@dataclass(frozen=True)
class ServedView:
    """What the server served in one handshake, compared with the installed file."""

    address: str
    port: int
    fingerprint: str | None
    serial: int | None
    matches_installed: bool | None
    error: str | None = None


@dataclass(frozen=True)
class ClusterView:
    """One cluster's TLS lifecycle state."""

    label: str
    option: tuple[str, ...]
    running: bool
    pid: int | None
    port: int | None
    ssl: bool
    server_certificate: CertificateView | None
    served: ServedView | None
    ssl_ca_file: Path | None
    ca_file_subjects: tuple[str, ...]
    ssl_crl_file: Path | None
    crls: tuple[CrlView, ...]
    level: Level
    error: str | None = None


@dataclass(frozen=True)
class RotationView:
    """A CA rotation in progress."""

    stage: OverlapStage
    started_at: str
    planned_end: str
    ended: bool
    previous_ca: CertificateView | None
    servers_on_old_ca: tuple[str, ...]
    old_client_certificates: int


@dataclass(frozen=True)
class Action:
    """Something to do now, with the exact command that does it."""

    title: str
    command: str


@dataclass(frozen=True)
class StatusReport:
    """Everything ``status`` found, judged at ``generated_at``."""

    generated_at: dt.datetime
    ca_dir: Path
    ca: CertificateView | None
    crl: CrlView | None
    clients: tuple[CertificateView, ...]
    clusters: tuple[ClusterView, ...]
    rotation: RotationView | None
    findings: tuple[Finding, ...]
    actions: tuple[Action, ...]

    @property
    def level(self) -> Level:
        level: Level = "ok"
        for finding in self.findings:
            level = worse(level, level_of(finding.severity))
        return level

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.level]


class Builder:
    """Collects findings and actions while the views are built."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = ca_dir
        self.findings: list[Finding] = []
        self.actions: list[Action] = []

    def command(self, *args: str) -> str:
        return shlex.join(["pgbatten", *args, "--ca-dir", str(self.ca_dir)])

    def add(
        self,
        fid: str,
        level: Level | Severity,  # a status level or a finding severity
        title: str,
        detail: str = "",
        fix: str | None = None,
        action: str | None = None,
    ) -> None:
        severity = severity_for(level)
        self.findings.append(Finding(fid, severity, title, detail, fix))
        if fix is not None and action is not None and all(a.command != fix for a in self.actions):
            self.actions.append(Action(action, fix))


def severity_for(value: Level | Severity) -> Severity:
    if value == "ok":
        return "info"
    if value == "warning":
        return "medium"
    return value


def validity_of(cert: x509.Certificate) -> Validity:
    return Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)


def ago_or_left(delta: dt.timedelta) -> str:
    return format_duration(delta) if delta > dt.timedelta() else f"{format_duration(-delta)} ago"


def authority_of(cert: x509.Certificate, ca: CAFacts, rotation: RotationFacts | None) -> str:
    if ca.certificate is not None and issued_by(cert, ca.certificate):
        return "current"
    previous = rotation.previous.certificate if rotation is not None else None
    if previous is not None and issued_by(cert, previous):
        return "previous"
    if any(issued_by(cert, old) for old in ca.retired):
        return "retired"
    return "foreign"


def level_since(b: Builder, start: int) -> Level:
    """The worst level among the findings added since ``start``."""
    level: Level = "ok"
    for finding in b.findings[start:]:
        level = worse(level, level_of(finding.severity))
    return level


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None
