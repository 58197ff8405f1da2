"""``status`` for one cluster: the installed and the served server certificate, ``ssl_ca_file`` and the
CRLs it has installed, judged at ``now``. Pure."""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import fingerprint_sha256, host_names
from pgbatten.lifecycle.facts import CAFacts, ClusterFacts, RotationFacts
from pgbatten.lifecycle.timeline import (
    CertState,
    Level,
    Thresholds,
    Validity,
    cert_state,
    crl_resign_at,
    crl_resign_due,
    format_duration,
    renew_at,
    renewal_due,
)
from pgbatten.lifecycle.views import (
    Builder,
    CertificateView,
    ClusterView,
    CrlView,
    ServedView,
    ago_or_left,
    authority_of,
    crl_number,
    level_since,
    validity_of,
)


@dataclass(frozen=True)
class Judging:
    """What judging each cluster needs besides the cluster: the findings being built, the CA, the clock."""

    b: Builder
    ca: CAFacts
    now: dt.datetime
    limits: Thresholds
    rotation: RotationFacts | None


def _server_view(j: Judging, c: ClusterFacts) -> CertificateView | None:
    b, ca, now, limits, rotation = j.b, j.ca, j.now, j.limits, j.rotation
    renew = b.command("renew", *c.ref.args())
    if c.cert_error is not None:
        b.add("server-cert-unreadable", "critical", f"{c.label}: the server certificate", c.cert_error)
        return None
    if not c.chain:
        return None
    leaf = c.chain[0]
    validity = validity_of(leaf)
    authority = authority_of(leaf, ca, rotation)
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
    old_ca = authority in ("previous", "retired")
    due = renewal_due(validity, now, limits.renew_before) or is_revoked or old_ca
    managed = c.managed and authority != "foreign"
    if level != "ok":
        b.add(
            "server-cert-expired" if state is CertState.EXPIRED else "server-cert-expiring",
            level,
            f"{c.label}: the server certificate {leaf.serial_number:#x} ends {validity.end:%Y-%m-%d} "
            f"({ago_or_left(validity.end - now)})",
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
    issuer = (
        ca.certificate
        if authority == "current"
        else rotation.previous.certificate
        if (authority == "previous" and rotation is not None)
        else None
    )
    if issuer is not None and validity.end > issuer.not_valid_after_utc:
        b.add(
            "leaf-outlives-ca",
            "warning",
            f"{c.label}: the server certificate ends {validity.end:%Y-%m-%d}, after its CA "
            f"({issuer.not_valid_after_utc:%Y-%m-%d})",
            "clients stop verifying it when the CA ends",
            renew,
            f"re-issue the server certificate of {c.label} within its CA's life",
        )
    if authority == "retired":
        b.add(
            "server-cert-retired-ca",
            "warning",
            f"{c.label}: the server certificate was issued by a retired CA",
            "clients holding only the current root cannot verify it",
            renew,
            f"re-issue the server certificate of {c.label} from the current CA",
        )
    if not managed:
        b.add(
            "server-cert-foreign",
            "info",
            f"{c.label}: the server certificate is not pgbatten's ({c.cert_path})",
            "renew leaves it alone; make it pgbatten's with pgbatten secure",
        )
    elif due and level == "ok" and not is_revoked:
        why = "its CA is being retired" if old_ca else "less than a third of its life is left"
        if limits.renew_before is not None and not old_ca:
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


def cluster_view(j: Judging, c: ClusterFacts) -> ClusterView:
    b, ca = j.b, j.ca
    before = len(b.findings)
    option = tuple(c.ref.args())
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
    server = _server_view(j, c)
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
    crls = _cluster_crls(j, c)
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
        level=level_since(b, before),
    )


def _empty_cluster(c: ClusterFacts, option: tuple[str, ...], b: Builder, before: int) -> ClusterView:
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
        level=level_since(b, before),
        error=c.error,
    )


def _served_view(b: Builder, c: ClusterFacts, server: CertificateView | None) -> ServedView | None:
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
            b.command("renew", *c.ref.args()),
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


def _cluster_crls(j: Judging, c: ClusterFacts) -> tuple[CrlView, ...]:
    b, ca, now, limits, rotation = j.b, j.ca, j.now, j.limits, j.rotation
    if c.crl_file_error is not None:
        b.add(
            "crl-file-unreadable",
            "critical",
            f"{c.label}: ssl_crl_file",
            f"{c.crl_file_error}; PostgreSQL refuses client certificates it cannot check",
        )
        return ()
    renew = b.command("renew", *c.ref.args())
    views: list[CrlView] = []
    authorities = [ca] + ([rotation.previous] if rotation is not None else [])
    for crl in c.crls:
        source = next(
            (a for a in authorities if a.crl is not None and a.crl.issuer == crl.issuer),
            None,
        )
        current = None
        mine, theirs = crl_number(crl), crl_number(source.crl) if source and source.crl else None
        if mine is not None and theirs is not None:
            # Older than the CA's latest: revocations since then are not in force here.
            current = mine >= theirs
        view = crl_view(crl, now, limits, path=c.crl_file_path, size=c.crl_file_size, current=current)
        views.append(view)
        if view.level != "ok" and view.next_update is not None:
            b.add(
                "installed-crl-expired" if view.next_update <= now else "installed-crl-expiring",
                view.level,
                f"{c.label}: the installed CRL of {view.issuer} reaches its next update "
                f"{view.next_update:%Y-%m-%d %H:%M} UTC ({ago_or_left(view.next_update - now)})",
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


def crl_view(
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
