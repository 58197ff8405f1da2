"""The server's half: a CSR from ``secure``'s plan, with a key made here that never leaves this machine.

The names are the ones ``secure`` would put in a certificate it issued itself (every ``--host``, the
machine's names, the addresses in ``listen_addresses``), so the signed certificate passes the same proofs.
The key is written beside postgresql.conf as ``pgbatten-server.key.pending`` (mode 0600, owned by the
cluster's owner), where ``secure --certificate`` finds it; the key in use is not touched until then, so the
server keeps serving its current certificate. A pending key is reused by the next request, so a run that
stopped between the CSR and the installation can simply be repeated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from pgbatten.certfacts import fingerprint_sha256, first_pem_certificate, host_names, issued_by, san_strings
from pgbatten.cluster.discover import Cluster
from pgbatten.cluster.osuser import needs_switch
from pgbatten.errors import PKIError, UsageError
from pgbatten.fsutil import atomic_write, read_bytes_or_none
from pgbatten.lifecycle.timeline import Validity, format_duration, renewal_due
from pgbatten.pki import KeyType, classify_host, generate_key, key_type_of, load_private_key_pem
from pgbatten.pki.csr import csr_pem, make_server_csr
from pgbatten.pki.keys import PrivateKey, private_key_pem, public_key_matches
from pgbatten.secure.facts import read_state
from pgbatten.secure.hosts import certificate_hosts
from pgbatten.secure.plan import CERT_NAME, KEY_NAME, PENDING_KEY_NAME, RENEW_BEFORE
from pgbatten.timestamps import iso

JSON_SCHEMA = "pgbatten.csr/1"


def pending_key_path(cert_dir: Path) -> Path:
    return cert_dir / PENDING_KEY_NAME


def load_roots(data: bytes, *, label: str = "the CA certificate") -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle (``roots.crt`` holds two during a CA rotation)."""
    try:
        roots = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise PKIError(f"{label} is not a readable PEM certificate: {exc}") from exc
    if not roots:
        raise PKIError(f"{label} holds no certificate")
    return roots


def replacement_reasons(
    cert_pem: bytes | None,
    key_pem: bytes | None,
    *,
    roots: Sequence[x509.Certificate],
    hosts: Sequence[str],
    key_type: KeyType,
    now: dt.datetime,
    before: dt.timedelta | None = None,
) -> list[str]:
    """Why the installed server certificate must be replaced; empty when it can stay. Pure.

    The rules of ``secure`` (the CA's own, covers every host, its key beside it, of the key type asked
    for, more than 30 days left) and of ``renew`` (less than a third of its life, or ``before``, left).
    """
    if cert_pem is None:
        return [f"no {CERT_NAME} is installed"]
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return [f"{CERT_NAME} is not a readable certificate"]
    reasons: list[str] = []
    if not any(issued_by(cert, root) for root in roots):
        reasons.append(f"it was issued by {cert.issuer.rfc4514_string()}, not by the CA given")
    key = _load_key(key_pem)
    if key is None:
        reasons.append(f"{KEY_NAME} is missing or unreadable")
    elif not public_key_matches(key, cert):
        reasons.append(f"{KEY_NAME} does not belong to it")
    elif key_type_of(key) != key_type:
        reasons.append(f"its key is {key_type_of(key).value}, not {key_type.value}")
    present = set(host_names(cert))
    missing = [h for h in hosts if str(classify_host(h)) not in present]
    if missing:
        reasons.append(f"it does not name {', '.join(missing)}")
    validity = Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
    if now >= validity.end:
        reasons.append(f"it expired on {validity.end:%Y-%m-%d}")
    elif validity.end - RENEW_BEFORE < now or renewal_due(validity, now, before):
        rule = f"less than {format_duration(before)}" if before else "less than a third of its life"
        reasons.append(f"{rule} is left ({format_duration(validity.remaining(now))})")
    return reasons


def _load_key(data: bytes | None) -> PrivateKey | None:
    if data is None:
        return None
    try:
        return load_private_key_pem(data)
    except PKIError:
        return None


@dataclass(frozen=True)
class CsrResult:
    """What ``request_certificate`` found and did."""

    cluster: str
    hosts: tuple[str, ...]
    key_type: KeyType
    needed: bool
    reasons: tuple[str, ...]
    key_path: Path
    key_created: bool
    csr: x509.CertificateSigningRequest | None
    installed: x509.Certificate | None

    @property
    def changed(self) -> bool:
        return self.key_created

    def csr_pem(self) -> bytes | None:
        return csr_pem(self.csr) if self.csr is not None else None

    def to_json(self) -> dict[str, Any]:
        installed = self.installed
        pem = self.csr_pem()
        return {
            "schema": JSON_SCHEMA,
            "cluster": self.cluster,
            "needed": self.needed,
            "reasons": list(self.reasons),
            "hosts": list(self.hosts),
            "key_type": self.key_type.value,
            "key_path": str(self.key_path),
            "key_created": self.key_created,
            "csr": pem.decode() if pem is not None else None,
            "installed": (
                {
                    "serial": str(installed.serial_number),
                    "issuer": installed.issuer.rfc4514_string(),
                    "sans": list(san_strings(installed)),
                    "not_after": iso(installed.not_valid_after_utc),
                    "fingerprint_sha256": fingerprint_sha256(installed),
                }
                if installed is not None
                else None
            ),
        }


def request_certificate(
    cluster: Cluster,
    *,
    hosts: Sequence[str] = (),
    key_type: KeyType = KeyType.ECDSA_P256,
    ca_certificate: bytes | None = None,
    before: dt.timedelta | None = None,
    force: bool = True,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> CsrResult:
    """A CSR for ``cluster``'s server certificate, its key made (or reused) here.

    With ``force`` False and ``ca_certificate`` given, nothing is made when the installed certificate can
    stay (``needed`` False). ``dry_run`` writes nothing: the CSR is made only if a pending key exists.
    """
    for host in hosts:
        classify_host(host)  # a bad host name is the caller's to fix, before anything is read
    now = now or dt.datetime.now(dt.UTC)
    state = read_state(cluster)
    names = certificate_hosts(state.listen_addresses, hosts, state.machine)
    if not names:
        raise UsageError("no host name or address for the certificate; pass --host NAME")
    cert_pem = state.existing.get(state.cert_dir / CERT_NAME)
    if ca_certificate is not None:
        reasons = replacement_reasons(
            cert_pem,
            state.existing.get(state.cert_dir / KEY_NAME),
            roots=load_roots(ca_certificate),
            hosts=names,
            key_type=key_type,
            now=now,
            before=before,
        )
    else:
        reasons = ["no CA certificate given to judge the installed one by"]
    needed = bool(reasons) or force
    if force and not reasons:
        reasons = ["asked for (the installed certificate could stay)"]
    installed = first_pem_certificate(cert_pem)
    key_path = pending_key_path(state.cert_dir)
    if not needed:
        return CsrResult(cluster.label, names, key_type, False, (), key_path, False, None, installed)
    key = _pending_key(key_path, key_type)
    created = False
    if key is None and not dry_run:
        key = generate_key(key_type)
        owner = cluster.owner.ids if needs_switch(cluster.owner) else None
        # Created with its final mode and renamed into place: never readable by anyone else, not even briefly.
        atomic_write(key_path, private_key_pem(key), mode=0o600, owner=owner)
        created = True
    csr = make_server_csr(key, names) if key is not None else None
    return CsrResult(cluster.label, names, key_type, True, tuple(reasons), key_path, created, csr, installed)


def _pending_key(path: Path, key_type: KeyType) -> PrivateKey | None:
    """The pending key left by an earlier request, when it is of the type asked for."""
    key = _load_key(read_bytes_or_none(path))
    if key is None:
        return None
    try:
        return key if key_type_of(key) == key_type else None
    except PKIError:
        return None
