"""``pgbatten status`` as data: from the facts read and a ``now`` to levels, findings and next steps. Pure.

Exit status for monitoring: 0 when everything is fine, 1 when something needs attention soon (a warning),
2 when something is broken or about to be (critical), or when status itself could not run.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import fingerprint_sha256, host_names, issued_by
from pgbatten.findings import Finding, Severity
from pgbatten.lifecycle.facts import CAFacts, ClusterFacts, RotationFacts
from pgbatten.lifecycle.timeline import (
    CertState,
    Level,
    OverlapStage,
    Thresholds,
    Validity,
    cert_state,
    crl_resign_at,
    crl_resign_due,
    format_duration,
    overlap_ended,
    overlap_stage,
    renew_at,
    renewal_due,
    worse,
)
from pgbatten.pki import CAStore, InventoryEntry

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


class _Builder:
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
        severity = _severity(level)
        self.findings.append(Finding(fid, severity, title, detail, fix))
        if fix is not None and action is not None and all(a.command != fix for a in self.actions):
            self.actions.append(Action(action, fix))


def _severity(value: Level | Severity) -> Severity:
    if value == "ok":
        return "info"
    if value == "warning":
        return "medium"
    return value


def _validity(cert: x509.Certificate) -> Validity:
    return Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)


def _days(delta: dt.timedelta) -> str:
    return format_duration(delta) if delta > dt.timedelta() else f"{format_duration(-delta)} ago"


def _authority(cert: x509.Certificate, ca: CAFacts, rotation: RotationFacts | None) -> str:
    if ca.certificate is not None and issued_by(cert, ca.certificate):
        return "current"
    previous = rotation.previous.certificate if rotation is not None else None
    if previous is not None and issued_by(cert, previous):
        return "previous"
    return "foreign"


def evaluate(
    ca: CAFacts,
    clusters: Sequence[ClusterFacts],
    *,
    now: dt.datetime,
    thresholds: Thresholds | None = None,
    rotation: RotationFacts | None = None,
) -> StatusReport:
    """Judge everything at ``now``: a level for each part, findings with fixes, and what to do next."""
    limits = thresholds or Thresholds()
    b = _Builder(ca.path)
    ca_view = _ca_view(b, ca, now, limits)
    crl_view = _ca_crl_view(b, ca, now, limits)
    clients = _client_views(b, ca, now, limits, authority="current")
    if rotation is not None:
        clients += _client_views(b, rotation.previous, now, limits, authority="previous")
    cluster_views = tuple(_cluster_view(b, c, ca, now, limits, rotation) for c in clusters)
    rotation_view = _rotation_view(b, rotation, cluster_views, clients, now, limits)
    return StatusReport(
        generated_at=now,
        ca_dir=ca.path,
        ca=ca_view,
        crl=crl_view,
        clients=clients,
        clusters=cluster_views,
        rotation=rotation_view,
        findings=tuple(b.findings),
        actions=tuple(b.actions),
    )


def _ca_view(b: _Builder, ca: CAFacts, now: dt.datetime, limits: Thresholds) -> CertificateView | None:
    if ca.certificate is None:
        b.add("ca-missing", "critical", "no readable CA", ca.error or f"no CA in {ca.path}")
        return None
    cert = ca.certificate
    validity = _validity(cert)
    level = limits.ca.level(validity.end, now)
    state = cert_state(validity, now, limits.ca)
    if level != "ok":
        left = validity.remaining(now)
        b.add(
            "ca-expired" if state is CertState.EXPIRED else "ca-expiring",
            level,
            f"the CA certificate ends {validity.end:%Y-%m-%d} ({_days(left)})",
            "every certificate it signed ends with it; rotate to a new CA with an overlap",
            b.command("ca", "rotate"),
            "start a CA rotation",
        )
    return CertificateView(
        kind="ca",
        name=cert.subject.rfc4514_string(),
        serial=cert.serial_number,
        not_after=validity.end,
        not_before=validity.start,
        state=state,
        level=level,
        issuer=cert.issuer.rfc4514_string(),
        subject=cert.subject.rfc4514_string(),
        fingerprint=fingerprint_sha256(cert),
    )


def _crl_view(
    crl: x509.CertificateRevocationList,
    now: dt.datetime,
    limits: Thresholds,
    *,
    path: Path | None = None,
    size: int | None = None,
    current: bool | None = None,
) -> CrlView:
    next_update = crl.next_update_utc
    validity = Validity(crl.last_update_utc, next_update) if next_update is not None else None
    level: Level = limits.crl.level(next_update, now) if next_update is not None else "ok"
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlView(
        issuer=crl.issuer.rfc4514_string(),
        next_update=next_update,
        last_update=crl.last_update_utc,
        number=number,
        revoked=len(list(crl)),
        level=level,
        resign_at=crl_resign_at(validity) if validity is not None else None,
        resign_due=crl_resign_due(validity, now),
        path=path,
        size_bytes=size,
        current=current,
    )


def _ca_crl_view(b: _Builder, ca: CAFacts, now: dt.datetime, limits: Thresholds) -> CrlView | None:
    revoked = [e for e in ca.entries if e.revoked]
    if ca.crl is None:
        if revoked:
            b.add(
                "crl-missing",
                "warning",
                f"{len(revoked)} certificate(s) revoked but no CRL written",
                "the servers cannot know of the revocation",
                b.command("crl", "refresh"),
                "write the CRL",
            )
        return None
    view = _crl_view(ca.crl, now, limits, path=CAStore(ca.path).crl_path, size=ca.crl_size)
    listed = {r.serial_number for r in ca.crl}
    missing = [e for e in revoked if e.serial not in listed]
    if missing:
        b.add(
            "crl-behind-inventory",
            "warning",
            f"{len(missing)} revoked certificate(s) are not in the CA's CRL yet",
            "",
            b.command("renew"),
            "re-sign the CRL",
        )
    if view.level != "ok" and view.next_update is not None:
        b.add(
            "crl-expiring" if view.next_update > now else "crl-expired",
            view.level,
            f"the CA's CRL reaches its next update {view.next_update:%Y-%m-%d %H:%M} UTC "
            f"({_days(view.next_update - now)})",
            "past it, PostgreSQL refuses every client certificate",
            b.command("renew"),
            "re-sign the CRL",
        )
    return view


ASSUMED_LIFETIME = dt.timedelta(days=365)
"""The lifetime assumed for an inventory entry that does not record its start (``cert client``'s default)."""


def _recorded_start(entry: InventoryEntry) -> dt.datetime | None:
    start = getattr(entry, "not_before", None)
    return start if isinstance(start, dt.datetime) else None


def _start_of(entry: InventoryEntry) -> dt.datetime:
    # Inventories that record notBefore give the real life; older ones get cert client's default, which
    # errs towards renewing a short-lived certificate early rather than late.
    return _recorded_start(entry) or entry.not_after - ASSUMED_LIFETIME


def _client_views(
    b: _Builder, ca: CAFacts, now: dt.datetime, limits: Thresholds, *, authority: str
) -> tuple[CertificateView, ...]:
    clients = [e for e in ca.entries if e.kind == "client"]
    newest: dict[str, InventoryEntry] = {}
    for entry in clients:
        if entry.revoked:
            continue
        best = newest.get(entry.name)
        if best is None or entry.not_after > best.not_after:
            newest[entry.name] = entry
    views: list[CertificateView] = []
    for entry in clients:
        start = _start_of(entry)
        validity = Validity(start, entry.not_after)
        state = cert_state(validity, now, limits.certificate, revoked=entry.revoked)
        is_newest = newest.get(entry.name) is entry
        level: Level = "ok"
        if is_newest and state in (CertState.EXPIRING, CertState.EXPIRED):
            level = limits.certificate.level(entry.not_after, now)
        due = not entry.revoked and (
            renewal_due(validity, now, limits.renew_before) or authority == "previous"
        )
        views.append(
            CertificateView(
                kind="client",
                name=entry.name,
                serial=entry.serial,
                not_after=entry.not_after,
                not_before=_recorded_start(entry),
                state=state,
                level=level,
                renew_at=renew_at(validity, limits.renew_before),
                renew_due=due and is_newest,
                fingerprint=entry.fingerprint_sha256,
                authority=authority,
                revoked_at=entry.revoked_at,
            )
        )
        if level != "ok":
            b.add(
                "client-cert-expired" if state is CertState.EXPIRED else "client-cert-expiring",
                level,
                f"client certificate {entry.serial:#x} of {entry.name} ends {entry.not_after:%Y-%m-%d} "
                f"({_days(entry.not_after - now)})",
                f"{entry.name} has no other valid certificate",
                b.command("renew", "--client", entry.name),
                f"re-issue {entry.name}'s certificate",
            )
        elif not entry.revoked and not is_newest and state is not CertState.EXPIRED:
            replacement = newest.get(entry.name)
            assert replacement is not None
            b.add(
                "client-cert-replaced",
                "info",
                f"client certificate {entry.serial:#x} of {entry.name} was replaced by "
                f"{replacement.serial:#x} and is still valid until {entry.not_after:%Y-%m-%d}",
                "revoke it once the new bundle is handed out",
                shlex.join(["pgbatten", "cert", "revoke", f"{entry.serial:#x}", "--ca-dir", str(ca.path)]),
            )
    return tuple(views)


def _server_view(
    b: _Builder,
    c: ClusterFacts,
    ca: CAFacts,
    now: dt.datetime,
    limits: Thresholds,
    rotation: RotationFacts | None,
) -> CertificateView | None:
    renew = b.command("renew", *c.ref.option())
    if c.cert_error is not None:
        b.add("server-cert-unreadable", "critical", f"{c.label}: the server certificate", c.cert_error)
        return None
    if not c.chain:
        return None
    leaf = c.chain[0]
    validity = _validity(leaf)
    authority = _authority(leaf, ca, rotation)
    revoked = {e.serial for e in ca.entries if e.revoked and e.kind == "server"}
    if rotation is not None:
        revoked |= {e.serial for e in rotation.previous.entries if e.revoked and e.kind == "server"}
    is_revoked = leaf.serial_number in revoked and authority != "foreign"
    state = cert_state(validity, now, limits.certificate, revoked=is_revoked)
    level = limits.certificate.level(validity.end, now)
    fingerprint = fingerprint_sha256(leaf)
    served = None
    if c.served is not None and c.served.leaf_fingerprint is not None:
        served = c.served.leaf_fingerprint == fingerprint
    due = renewal_due(validity, now, limits.renew_before) or is_revoked or authority == "previous"
    managed = c.managed and authority != "foreign"
    if level != "ok":
        b.add(
            "server-cert-expired" if state is CertState.EXPIRED else "server-cert-expiring",
            level,
            f"{c.label}: the server certificate {leaf.serial_number:#x} ends {validity.end:%Y-%m-%d} "
            f"({_days(validity.end - now)})",
            "verify-full clients refuse an expired certificate",
            renew if managed else None,
            f"renew the server certificate of {c.label}",
        )
    if is_revoked:
        b.add(
            "server-cert-revoked",
            "warning",
            f"{c.label}: the installed server certificate {leaf.serial_number:#x} is revoked",
            "",
            renew,
            f"replace the revoked server certificate of {c.label}",
        )
    if not managed:
        b.add(
            "server-cert-foreign",
            "info",
            f"{c.label}: the server certificate is not pgbatten's ({c.cert_path})",
            "renew leaves it alone; make it pgbatten's with pgbatten secure",
        )
    elif due and level == "ok" and not is_revoked:
        why = (
            "its CA is being retired" if authority == "previous" else "less than a third of its life is left"
        )
        if limits.renew_before is not None and authority != "previous":
            why = f"less than {format_duration(limits.renew_before)} of its life is left"
        b.add(
            "server-cert-renewal-due",
            "info",
            f"{c.label}: the server certificate is due for renewal",
            why,
            renew,
            f"renew the server certificate of {c.label}",
        )
    return CertificateView(
        kind="server",
        name=c.label,
        serial=leaf.serial_number,
        not_after=validity.end,
        not_before=validity.start,
        state=state,
        level=level,
        renew_at=renew_at(validity, limits.renew_before),
        renew_due=due and managed,
        issuer=leaf.issuer.rfc4514_string(),
        subject=leaf.subject.rfc4514_string(),
        sans=host_names(leaf),
        fingerprint=fingerprint,
        authority=authority,
        served=served,
    )


def _cluster_view(
    b: _Builder,
    c: ClusterFacts,
    ca: CAFacts,
    now: dt.datetime,
    limits: Thresholds,
    rotation: RotationFacts | None,
) -> ClusterView:
    before = len(b.findings)
    option = tuple(c.ref.option())
    if c.error is not None:
        b.add("cluster-unreadable", "critical", f"{c.label}: cannot read the cluster", c.error)
        return _empty_cluster(c, option, b, before)
    if not c.running:
        b.add(
            "cluster-not-running",
            "warning",
            f"{c.label}: the server is not running",
            "the served certificate cannot be checked; the files are judged as they are",
        )
    if not c.ssl_on:
        b.add(
            "ssl-off",
            "critical",
            f"{c.label}: ssl is off",
            "no TLS at all",
            shlex.join(["pgbatten", "secure", *option, "--ca-dir", str(ca.path)]),
            f"make {c.label} TLS-only",
        )
    server = _server_view(b, c, ca, now, limits, rotation)
    served_view = _served_view(b, c, server)
    ca_subjects = tuple(cert.subject.rfc4514_string() for cert in c.ca_file)
    if c.ca_file_error is not None:
        b.add("ca-file-unreadable", "critical", f"{c.label}: ssl_ca_file", c.ca_file_error)
    elif c.ca_file_path is not None and ca.certificate is not None and ca.certificate not in c.ca_file:
        b.add(
            "ca-file-lacks-ca",
            "warning",
            f"{c.label}: ssl_ca_file {c.ca_file_path} does not hold the CA in {ca.path}",
            "client certificates of this CA are refused",
            b.command("renew", *option),
            f"install the CA bundle on {c.label}",
        )
    crls = _cluster_crls(b, c, ca, now, limits, rotation)
    return ClusterView(
        label=c.label,
        option=option,
        running=c.running,
        pid=c.pid,
        port=c.port,
        ssl=c.ssl_on,
        server_certificate=server,
        served=served_view,
        ssl_ca_file=c.ca_file_path,
        ca_file_subjects=ca_subjects,
        ssl_crl_file=c.crl_file_path,
        crls=crls,
        level=_level_since(b, before),
    )


def _empty_cluster(c: ClusterFacts, option: tuple[str, ...], b: _Builder, before: int) -> ClusterView:
    return ClusterView(
        label=c.label,
        option=option,
        running=c.running,
        pid=None,
        port=c.port,
        ssl=False,
        server_certificate=None,
        served=None,
        ssl_ca_file=None,
        ca_file_subjects=(),
        ssl_crl_file=None,
        crls=(),
        level=_level_since(b, before),
        error=c.error,
    )


def _level_since(b: _Builder, start: int) -> Level:
    level: Level = "ok"
    for finding in b.findings[start:]:
        level = worse(level, level_of(finding.severity))
    return level


def _served_view(b: _Builder, c: ClusterFacts, server: CertificateView | None) -> ServedView | None:
    if c.served is None:
        return None
    s = c.served
    leaf = s.chain[0] if s.chain else None
    matches = None if server is None or leaf is None else server.fingerprint == fingerprint_sha256(leaf)
    if s.error is not None and leaf is None:
        b.add(
            "served-unknown",
            "warning",
            f"{c.label}: could not ask the server at {s.address} port {s.port} for its certificate",
            s.error,
        )
    elif matches is False:
        assert leaf is not None and server is not None
        b.add(
            "server-cert-not-served",
            "high",
            f"{c.label}: the server serves certificate {leaf.serial_number:#x}, not the installed "
            f"{server.serial:#x}",
            "the file on disk never reached the running server (no reload, or the reload refused it)",
            b.command("renew", *c.ref.option()),
            f"put the installed certificate of {c.label} in force",
        )
    return ServedView(
        address=s.address,
        port=s.port,
        fingerprint=fingerprint_sha256(leaf) if leaf is not None else None,
        serial=leaf.serial_number if leaf is not None else None,
        matches_installed=matches,
        error=s.error,
    )


def _cluster_crls(
    b: _Builder,
    c: ClusterFacts,
    ca: CAFacts,
    now: dt.datetime,
    limits: Thresholds,
    rotation: RotationFacts | None,
) -> tuple[CrlView, ...]:
    if c.crl_file_error is not None:
        b.add(
            "crl-file-unreadable",
            "critical",
            f"{c.label}: ssl_crl_file",
            f"{c.crl_file_error}; PostgreSQL refuses client certificates it cannot check",
        )
        return ()
    renew = b.command("renew", *c.ref.option())
    views: list[CrlView] = []
    authorities = [ca] + ([rotation.previous] if rotation is not None else [])
    for crl in c.crls:
        source = next(
            (a for a in authorities if a.crl is not None and a.crl.issuer == crl.issuer),
            None,
        )
        current = None
        mine, theirs = _crl_number(crl), _crl_number(source.crl) if source and source.crl else None
        if mine is not None and theirs is not None:
            # Older than the CA's latest: revocations since then are not in force here.
            current = mine >= theirs
        view = _crl_view(crl, now, limits, path=c.crl_file_path, size=c.crl_file_size, current=current)
        views.append(view)
        if view.level != "ok" and view.next_update is not None:
            b.add(
                "installed-crl-expired" if view.next_update <= now else "installed-crl-expiring",
                view.level,
                f"{c.label}: the installed CRL of {view.issuer} reaches its next update "
                f"{view.next_update:%Y-%m-%d %H:%M} UTC ({_days(view.next_update - now)})",
                "past it, PostgreSQL refuses every client certificate of that CA",
                renew,
                f"re-sign and install the CRL on {c.label}",
            )
        elif current is False:
            b.add(
                "installed-crl-stale",
                "warning",
                f"{c.label}: the installed CRL is older than the CA's (number {mine} < {theirs})",
                "revocations since then are not in force on this server",
                renew,
                f"install the current CRL on {c.label}",
            )
        elif view.resign_due:
            b.add(
                "crl-resign-due",
                "info",
                f"{c.label}: the installed CRL is due for re-signing",
                "less than half of its validity is left",
                renew,
                f"re-sign and install the CRL on {c.label}",
            )
    return tuple(views)


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _rotation_view(
    b: _Builder,
    rotation: RotationFacts | None,
    clusters: Sequence[ClusterView],
    clients: Sequence[CertificateView],
    now: dt.datetime,
    limits: Thresholds,
) -> RotationView | None:
    if rotation is None:
        return None
    on_old = tuple(
        c.label
        for c in clusters
        if c.server_certificate is None or c.server_certificate.authority != "current"
    )
    old_clients = [
        v
        for v in clients
        if v.authority == "previous" and v.state not in (CertState.REVOKED, CertState.EXPIRED)
    ]
    stage = overlap_stage(
        rotating=True, servers_on_old_ca=len(on_old), old_client_certificates=len(old_clients)
    )
    planned = dt.datetime.fromisoformat(rotation.planned_end.replace("Z", "+00:00"))
    ended = overlap_ended(planned, now)
    previous = _ca_view(_Builder(b.ca_dir), rotation.previous, now, limits)
    if stage is OverlapStage.SWITCHING_SERVERS:
        for c in clusters:
            if c.label in on_old:
                fix = b.command("renew", *c.option)
                b.add(
                    "rotation-server-pending",
                    "warning" if ended else "info",
                    f"CA rotation: {c.label} still serves a certificate of the old CA",
                    "renew re-issues it from the new CA and serves the cross certificate with it",
                    fix,
                    f"switch {c.label} to the new CA",
                )
    elif stage is OverlapStage.MOVING_CLIENTS:
        for v in old_clients:
            b.add(
                "rotation-client-pending",
                "warning" if ended else "info",
                f"CA rotation: {v.name} holds certificate {v.serial:#x} of the old CA",
                "re-issue it from the new CA and hand the bundle out (the old one is refused after retire)",
                b.command("renew", "--client", v.name),
                f"re-issue {v.name}'s certificate from the new CA",
            )
    else:
        b.add(
            "rotation-ready",
            "warning" if ended else "info",
            "CA rotation: nothing depends on the old CA any more",
            f"the overlap {'ended' if ended else 'ends'} {planned:%Y-%m-%d}",
            b.command("ca", "retire"),
            "end the overlap",
        )
    return RotationView(
        stage=stage,
        started_at=rotation.started_at,
        planned_end=rotation.planned_end,
        ended=ended,
        previous_ca=previous,
        servers_on_old_ca=on_old,
        old_client_certificates=len(old_clients),
    )
