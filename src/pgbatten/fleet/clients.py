"""Client certificate bundles kept present (or revoked) idempotently, where the CA is.

``cert client`` always issues; a play runs again and again, so here a bundle that is already right stays: its
certificate is this CA's, for that user, unrevoked, and not due for renewal. Otherwise a fresh bundle
replaces it (the earlier certificate stays valid; ``renew --client`` hands over with a grace period).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from pgbatten.certfacts import issued_by
from pgbatten.lifecycle.timeline import Validity, format_duration, renewal_due
from pgbatten.pki import KeyType
from pgbatten.pki.operations import (
    issue_client_bundle,
    open_store,
    prepare_client_bundle,
    revoke,
)


@dataclass(frozen=True)
class ClientOutcome:
    user: str
    changed: bool
    reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "changed": self.changed, "reasons": list(self.reasons), **self.details}


def bundle_reasons(
    bundle_dir: Path, user: str, ca: x509.Certificate, revoked: set[int], now: dt.datetime,
    before: dt.timedelta | None,
) -> list[str]:  # fmt: skip
    """Why the bundle in ``bundle_dir`` must be (re)issued; empty when it is right."""
    path = bundle_dir / "postgresql.crt"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return [f"no readable {path}"]
    reasons = []
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [user]:
        reasons.append(f"its CN is {cns}, not {user!r}")
    if not issued_by(cert, ca):
        reasons.append("it is not this CA's")
    if cert.serial_number in revoked:
        reasons.append("it is revoked")
    validity = Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
    if now >= validity.end:
        reasons.append(f"it expired on {validity.end:%Y-%m-%d}")
    elif renewal_due(validity, now, before):
        reasons.append(f"renewal is due ({format_duration(validity.remaining(now))} left)")
    if not (bundle_dir / "postgresql.key").exists():
        reasons.append("its key is missing")
    return reasons


def ensure_client(
    ca_dir: Path,
    user: str,
    *,
    out_dir: Path,
    port: int,
    server_host: str | None = None,
    dbname: str = "postgres",
    days: int = 365,
    key_type: KeyType = KeyType.ECDSA_P256,
    p12_password: bytes | None = None,
    before: dt.timedelta | None = None,
    passphrase: bytes | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> ClientOutcome:
    """Leave ``user``'s bundle in ``out_dir`` right: issue one only when there is none or it is not right."""
    now = now or dt.datetime.now(dt.UTC)
    store = open_store(ca_dir)
    ca = x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes())
    revoked = {e.serial for e in store.entries() if e.revoked}
    reasons = bundle_reasons(out_dir, user, ca, revoked, now, before)
    if not reasons:
        return ClientOutcome(user, False, (), {"bundle": str(out_dir)})
    request = prepare_client_bundle(
        store, user, out_dir=out_dir, key_type=key_type, days=days, server_host=server_host, port=port,
        dbname=dbname, force=True, p12_password=p12_password,
    )  # fmt: skip
    if dry_run:
        return ClientOutcome(user, True, tuple(reasons), {"bundle": str(out_dir)})
    issued = issue_client_bundle(store, store.load(passphrase), request, now=now)
    return ClientOutcome(user, True, tuple(reasons), issued.to_json())


def revoke_client(
    ca_dir: Path, user: str, *, passphrase: bytes | None = None, crl_days: int = 30, dry_run: bool = False
) -> ClientOutcome:
    """Revoke every unrevoked client certificate of ``user`` and sign the CRL; nothing when none is left."""
    store = open_store(ca_dir)
    valid = [e for e in store.matching(user) if not e.revoked]
    if not valid:
        return ClientOutcome(user, False)
    serials = [f"{e.serial:#x}" for e in valid]
    if dry_run:
        return ClientOutcome(user, True, (), {"revoked": serials})
    result = revoke(store, store.load(passphrase), user, crl_days=crl_days)
    return ClientOutcome(user, True, (), {"revoked": [f"{e.serial:#x}" for e in result.revoked]})
