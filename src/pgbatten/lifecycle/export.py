"""A status report as JSON (a stable interface: scripts, Ansible facts) and as a node_exporter textfile.

Pure rendering, plus :func:`write_textfile`, which writes atomically so node_exporter never reads half a
file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pgbatten.findings import finding_to_json
from pgbatten.fsutil import atomic_write
from pgbatten.lifecycle.renew import RenewResult
from pgbatten.lifecycle.timeline import LEVELS, OverlapStage
from pgbatten.lifecycle.views import (
    CertificateView,
    ClusterView,
    CrlView,
    RotationView,
    ServedView,
    StatusReport,
)
from pgbatten.timestamps import iso


def _iso(value: dt.datetime | None) -> str | None:
    return iso(value) if value is not None else None


def cert_json(view: CertificateView) -> dict[str, Any]:
    """One certificate; serials are hex strings (``0x…``), as every pgbatten command prints them."""
    return {
        "kind": view.kind,
        "name": view.name,
        "serial": f"{view.serial:#x}",
        "subject": view.subject,
        "issuer": view.issuer,
        "sans": list(view.sans),
        "not_before": _iso(view.not_before),
        "not_after": _iso(view.not_after),
        "state": str(view.state),
        "level": view.level,
        "renew_at": _iso(view.renew_at),
        "renew_due": view.renew_due,
        "fingerprint_sha256": view.fingerprint,
        "authority": view.authority,
        "revoked_at": _iso(view.revoked_at),
        "served": view.served,
    }


def crl_json(view: CrlView) -> dict[str, Any]:
    return {
        "issuer": view.issuer,
        "path": str(view.path) if view.path is not None else None,
        "number": view.number,
        "last_update": _iso(view.last_update),
        "next_update": _iso(view.next_update),
        "revoked": view.revoked,
        "size_bytes": view.size_bytes,
        "resign_at": _iso(view.resign_at),
        "resign_due": view.resign_due,
        "current": view.current,
        "level": view.level,
    }


def _served_json(view: ServedView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {
        "address": view.address,
        "port": view.port,
        "fingerprint_sha256": view.fingerprint,
        "serial": f"{view.serial:#x}" if view.serial is not None else None,
        "matches_installed": view.matches_installed,
        "error": view.error,
    }


def cluster_json(view: ClusterView) -> dict[str, Any]:
    return {
        "label": view.label,
        "running": view.running,
        "pid": view.pid,
        "port": view.port,
        "ssl": view.ssl,
        "server_certificate": cert_json(view.server_certificate) if view.server_certificate else None,
        "served": _served_json(view.served),
        "ssl_ca_file": str(view.ssl_ca_file) if view.ssl_ca_file is not None else None,
        "ssl_ca_file_subjects": list(view.ca_file_subjects),
        "ssl_crl_file": str(view.ssl_crl_file) if view.ssl_crl_file is not None else None,
        "crls": [crl_json(c) for c in view.crls],
        "level": view.level,
        "error": view.error,
    }


def _rotation_json(view: RotationView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {
        "stage": str(view.stage),
        "started_at": view.started_at,
        "planned_end": view.planned_end,
        "overlap_ended": view.ended,
        "previous_ca": cert_json(view.previous_ca) if view.previous_ca is not None else None,
        "servers_on_old_ca": list(view.servers_on_old_ca),
        "old_client_certificates": view.old_client_certificates,
    }


def report_json(report: StatusReport) -> dict[str, Any]:
    """The whole report; key names are a stable interface."""
    return {
        "generated_at": _iso(report.generated_at),
        "level": report.level,
        "exit_status": report.exit_status,
        "ca_dir": str(report.ca_dir),
        "ca": cert_json(report.ca) if report.ca is not None else None,
        "crl": crl_json(report.crl) if report.crl is not None else None,
        "clients": [cert_json(c) for c in report.clients],
        "clusters": [cluster_json(c) for c in report.clusters],
        "rotation": _rotation_json(report.rotation),
        "findings": [finding_to_json(f) for f in report.findings],
        "actions": [{"title": a.title, "command": a.command} for a in report.actions],
    }


# -- Prometheus ---------------------------------------------------------------------------------------------


def _label(value: str) -> str:
    # The text exposition format escapes backslash, double quote and line feed inside label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


class _Metrics:
    def __init__(self) -> None:
        self.families: dict[str, tuple[str, list[str]]] = {}

    def add(self, metric: str, help_text: str, value: float, **labels: str) -> None:
        family = self.families.setdefault(metric, (help_text, []))
        sample = f"{metric}{_labels(**labels) if labels else ''} {_number(value)}"
        if sample not in family[1]:
            family[1].append(sample)

    def render(self) -> str:
        out: list[str] = []
        for name, (help_text, samples) in self.families.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _ts(value: dt.datetime) -> float:
    return value.timestamp()


NOT_AFTER = "pgbatten_certificate_not_after_timestamp_seconds"
RENEW_AT = "pgbatten_certificate_renew_timestamp_seconds"
CRL_NEXT = "pgbatten_crl_next_update_timestamp_seconds"


def prometheus_text(report: StatusReport) -> str:
    """The report as node_exporter textfile metrics (gauges; timestamps in seconds since the epoch)."""
    m = _Metrics()
    certs: list[CertificateView] = []
    if report.ca is not None:
        certs.append(report.ca)
    if report.rotation is not None and report.rotation.previous_ca is not None:
        certs.append(report.rotation.previous_ca)
    certs.extend(c.server_certificate for c in report.clusters if c.server_certificate is not None)
    # Revoked certificates no longer matter to anyone's expiry alert.
    certs.extend(c for c in report.clients if c.revoked_at is None)
    for cert in certs:
        labels = {"kind": cert.kind, "name": cert.name, "serial": f"{cert.serial:#x}"}
        m.add(
            NOT_AFTER,
            "End of validity (notAfter) of a certificate pgbatten manages.",
            _ts(cert.not_after),
            **labels,
        )
        if cert.renew_at is not None:
            m.add(RENEW_AT, "When pgbatten renew re-issues the certificate.", _ts(cert.renew_at), **labels)
    crls: list[tuple[str, CrlView]] = [("ca", report.crl)] if report.crl is not None else []
    crls += [(c.label, v) for c in report.clusters for v in c.crls]
    for where, crl in crls:
        labels = {"where": where, "issuer": crl.issuer}
        if crl.next_update is not None:
            m.add(
                CRL_NEXT,
                "Next update of a CRL; past it PostgreSQL refuses every client certificate.",
                _ts(crl.next_update),
                **labels,
            )
        m.add("pgbatten_crl_revoked_certificates", "Certificates a CRL revokes.", crl.revoked, **labels)
        if crl.size_bytes is not None:
            m.add("pgbatten_crl_size_bytes", "Size of the CRL file.", crl.size_bytes, **labels)
    for c in report.clusters:
        if c.served is not None and c.served.matches_installed is not None:
            m.add(
                "pgbatten_server_certificate_served",
                "1 when the server serves the installed certificate file, 0 when it serves another.",
                1 if c.served.matches_installed else 0,
                cluster=c.label,
            )
        m.add(
            "pgbatten_cluster_status_level",
            "0 ok, 1 warning, 2 critical.",
            LEVELS.index(c.level),
            cluster=c.label,
        )
    stage = report.rotation.stage if report.rotation is not None else OverlapStage.NONE
    for candidate in OverlapStage:
        m.add(
            "pgbatten_ca_rotation_stage",
            "1 for the current stage of a CA rotation.",
            int(candidate is stage),
            stage=str(candidate),
        )
    m.add(
        "pgbatten_status_level",
        "0 ok, 1 warning, 2 critical (the status command's exit status).",
        report.exit_status,
    )
    m.add(
        "pgbatten_status_timestamp_seconds", "When pgbatten status wrote this file.", _ts(report.generated_at)
    )
    return m.render()


def write_textfile(path: Path, report: StatusReport) -> None:
    """Write the metrics atomically (node_exporter may read the file at any moment)."""
    atomic_write(path, prometheus_text(report).encode(), mode=0o644)


# -- renew ---------------------------------------------------------------------------------------------------


def renew_json(result: RenewResult) -> dict[str, Any]:
    """What ``renew`` did (or would do), as facts: ``changed`` is true only when something was written."""
    clusters = []
    for c in result.clusters:
        plan = c.plan
        clusters.append(
            {
                "label": c.label,
                "due": plan.due,
                "reasons": list(plan.reasons),
                "skipped": plan.skipped,
                "applied": c.applied,
                "old_serial": f"{plan.replaced_serial:#x}" if plan.replaced_serial is not None else None,
                "new_serial": f"{plan.issued.serial:#x}" if plan.issued is not None and c.applied else None,
                "files": [str(ch.path) for ch in plan.changes],
                "proofs": [{"what": p.what, "ok": p.ok, "detail": p.detail} for p in c.proofs],
                "backups": [{"original": str(o), "backup": str(b)} for o, b in c.backups],
                "error": c.error,
            }
        )
    return {
        "changed": not result.dry_run
        and (
            any(c.applied for c in result.clusters) or bool(result.clients or result.crls or result.revoked)
        ),
        "dry_run": result.dry_run,
        "nothing_due": result.nothing_due,
        "failed": [c.label for c in result.failed],
        "clusters": clusters,
        "clients": [
            {
                "user": c.user,
                "old_serial": f"{c.old_serial:#x}",
                "new_serial": f"{c.new_serial:#x}",
                "not_after": _iso(c.not_after),
                "bundle": str(c.bundle_dir),
                "password_file": str(c.password_file) if c.password_file is not None else None,
                "revoke_after": _iso(c.revoke_after),
            }
            for c in result.clients
        ],
        "clients_due": [
            {
                "user": d.user,
                "serial": f"{d.entry.serial:#x}",
                "reasons": list(d.reasons),
                "renew_at": _iso(d.renew_at),
            }
            for d in result.clients_due
        ],
        "revoked": [r.to_json() for r in result.revoked],
        "pending_revocation": [r.to_json() for r in result.handover],
        "crls": [
            {
                "ca_dir": str(c.ca_dir),
                "reason": c.reason,
                "number": c.number,
                "next_update": _iso(c.next_update),
            }
            for c in result.crls
        ],
    }
