"""``status`` on a server of a fleet: the cluster judged against the CA's certificate, with no CA directory.

The CA directory lives on the control node; a server has only what it installs (the roots, the CRL). So the
cluster part of ``pgbatten status`` is judged here against the CA certificate the control node hands over,
and the CA's own parts (client certificates, the inventory) are reported where the CA is.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509

from pgbatten.errors import PKIError
from pgbatten.fleet.request import load_roots
from pgbatten.lifecycle.export import cert_json, report_json
from pgbatten.lifecycle.facts import CAFacts, read_cluster
from pgbatten.lifecycle.status import evaluate
from pgbatten.lifecycle.timeline import Thresholds
from pgbatten.lifecycle.views import StatusReport
from pgbatten.pki import ClusterRef


def cluster_status(
    ref: ClusterRef,
    *,
    ca_certificate: bytes,
    crl: bytes | None = None,
    ca_label: str = "the control node's CA",
    thresholds: Thresholds | None = None,
    now: dt.datetime | None = None,
    timeout: float = 5.0,
) -> StatusReport:
    """The status of one cluster, its certificates judged against ``ca_certificate`` (PEM)."""
    roots = load_roots(ca_certificate)
    parsed_crl = None
    if crl is not None:
        try:
            parsed_crl = x509.load_pem_x509_crl(crl)
        except ValueError as exc:
            raise PKIError(f"the CRL given is not a readable PEM CRL: {exc}") from exc
    ca = CAFacts(path=Path(ca_label), certificate=roots[0], crl=parsed_crl, crl_size=len(crl or b"") or None)
    facts = read_cluster(ref, timeout=timeout)
    return evaluate(ca, [facts], now=now or dt.datetime.now(dt.UTC), thresholds=thresholds)


def status_facts(report: StatusReport) -> dict[str, Any]:
    """What an Ansible play tests in ``when:``: the level, whether renewal is due, whether it is served."""
    cluster = report.clusters[0] if report.clusters else None
    server = cluster.server_certificate if cluster is not None else None
    served = cluster.served if cluster is not None else None
    return {
        "level": report.level,
        "exit_status": report.exit_status,
        "ssl": cluster.ssl if cluster is not None else False,
        "running": cluster.running if cluster is not None else False,
        "renewal_due": bool(server is not None and server.renew_due),
        "served_is_installed": bool(served is not None and served.matches_installed),
        "server_certificate": cert_json(server) if server is not None else None,
        "findings": [f"{f.severity}: {f.title}" for f in report.findings],
        "report": report_json(report),
    }
