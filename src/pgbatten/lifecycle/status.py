"""``pgbatten status`` as data: from the facts read and a ``now`` to levels, findings and next steps. Pure.

Exit status for monitoring: 0 when everything is fine, 1 when something needs attention soon (a warning),
2 when something is broken or about to be (critical), or when status itself could not run.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Sequence

from pgbatten.certfacts import fingerprint_sha256
from pgbatten.lifecycle.facts import CAFacts, ClusterFacts, RotationFacts
from pgbatten.lifecycle.status_cluster import Judging, cluster_view, crl_view
from pgbatten.lifecycle.timeline import (
    CertState,
    Level,
    OverlapStage,
    Thresholds,
    Validity,
    cert_state,
    overlap_ended,
    overlap_stage,
    renew_at,
    renewal_due,
)
from pgbatten.lifecycle.views import (
    Builder,
    CertificateView,
    ClusterView,
    CrlView,
    RotationView,
    StatusReport,
    ago_or_left,
    validity_of,
)
from pgbatten.pki import CAStore, InventoryEntry
from pgbatten.timestamps import parse_iso


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
    b = Builder(ca.path)
    ca_view = _ca_view(b, ca, now, limits)
    crl_view = _ca_crl_view(b, ca, now, limits)
    clients = _client_views(b, ca, now, limits, authority="current")
    if rotation is not None:
        clients += _client_views(b, rotation.previous, now, limits, authority="previous")
    judging = Judging(b, ca, now, limits, rotation)
    cluster_views = tuple(cluster_view(judging, c) for c in clusters)
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


def _ca_view(b: Builder, ca: CAFacts, now: dt.datetime, limits: Thresholds) -> CertificateView | None:
    if ca.certificate is None:
        b.add("ca-missing", "critical", "no readable CA", ca.error or f"no CA in {ca.path}")
        return None
    cert = ca.certificate
    validity = validity_of(cert)
    level = limits.ca.level(validity.end, now)
    state = cert_state(validity, now, limits.ca)
    if level != "ok":
        left = validity.remaining(now)
        b.add(
            "ca-expired" if state is CertState.EXPIRED else "ca-expiring",
            level,
            f"the CA certificate ends {validity.end:%Y-%m-%d} ({ago_or_left(left)})",
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


def _ca_crl_view(b: Builder, ca: CAFacts, now: dt.datetime, limits: Thresholds) -> CrlView | None:
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
    view = crl_view(ca.crl, now, limits, path=CAStore(ca.path).crl_path, size=ca.crl_size)
    listed = {r.serial_number for r in ca.crl}
    # A certificate that had ended when the CRL was signed is left out of it on purpose.
    cutoff = ca.crl.last_update_utc - dt.timedelta(minutes=5)
    missing = [e for e in revoked if e.serial not in listed and e.not_after >= cutoff]
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
            f"({ago_or_left(view.next_update - now)})",
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
    b: Builder, ca: CAFacts, now: dt.datetime, limits: Thresholds, *, authority: str
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
                f"({ago_or_left(entry.not_after - now)})",
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


def _rotation_view(
    b: Builder,
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
    planned = parse_iso(rotation.planned_end)
    ended = overlap_ended(planned, now)
    previous = _ca_view(Builder(b.ca_dir), rotation.previous, now, limits)
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
