"""The server certificate ``secure`` installs: the one provided, the installed one while it fits, or a new
one; and whether pgbatten's files in the cluster come from another CA than the one in use.

Pure, like the rest of the plan: certificates and keys are given as bytes, nothing is read here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pgbatten.certfacts import (
    dns_names,
    fingerprint_sha256,
    first_pem_certificate,
    host_names,
    ip_addresses,
    issued_by,
)
from pgbatten.errors import PKIError
from pgbatten.pki import (
    CACertificate,
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    classify_host,
    key_type_of,
)
from pgbatten.pki.keys import load_private_key_pem, public_key_matches
from pgbatten.secure.names import CA_NAME, CERT_NAME
from pgbatten.secure.provided import check_provided, keyless_stand_in
from pgbatten.secure.request import SecureRequest

__all__ = [
    "RENEW_BEFORE",
    "AnyCA",
    "CaConflict",
    "ca_conflict",
    "certificate_names",
    "foreign_certificate_note",
    "reusable_certificate",
    "server_certificate",
]

AnyCA = CertificateAuthority | CACertificate
"""A CA with its key, or (on a server of a fleet) its certificate alone."""

# A certificate closer than this to its end is replaced rather than reused.
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CaConflict:
    """pgbatten's files in the cluster come from another CA than the one in use."""

    installed: str
    """The other CA: the installed ``pgbatten-ca.crt``'s subject and fingerprint, or the served issuer."""
    installed_fingerprint: str | None
    ours: str
    """The SHA-256 fingerprint of the CA in use."""
    files: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"{' and '.join(self.files)} in the cluster come from another CA ({self.installed}) than the one"
            f" in use (SHA-256 {self.ours}); replacing them breaks every client that verifies the server"
            " with the old root.crt, and every client certificate the old CA issued"
        )


def ca_conflict(
    ca_file: bytes | None,
    cert_file: bytes | None,
    ca: AnyCA,
    also_ours: Sequence[x509.Certificate] = (),
) -> CaConflict | None:
    """Whether ``pgbatten-ca.crt`` or ``pgbatten-server.crt`` in the cluster come from another CA than
    ``ca`` (or a root in ``also_ours``, the one a CA rotation is retiring)."""
    ours = fingerprint_sha256(ca.certificate)
    files: list[str] = []
    installed = installed_fp = None
    installed_ca = first_pem_certificate(ca_file)
    if installed_ca is not None and installed_ca != ca.certificate and installed_ca not in also_ours:
        installed_fp = fingerprint_sha256(installed_ca)
        installed = f"{installed_ca.subject.rfc4514_string()}, SHA-256 {installed_fp}"
        files.append(CA_NAME)
    served = first_pem_certificate(cert_file)
    if served is not None and not any(issued_by(served, c) for c in (ca.certificate, *also_ours)):
        files.append(CERT_NAME)
        if installed is None:
            installed = f"issuer {served.issuer.rfc4514_string()}"
            if installed_ca is not None and issued_by(served, installed_ca):
                installed_fp = fingerprint_sha256(installed_ca)
    if not files:
        return None
    assert installed is not None
    return CaConflict(installed=installed, installed_fingerprint=installed_fp, ours=ours, files=tuple(files))


def foreign_certificate_note(configured: tuple[Path, bytes] | None, ca: AnyCA) -> list[str]:
    """A certificate of someone else's that the server serves today is replaced: say so, and what it means.

    ``configured`` is the file the server is configured to serve and its content, when it is not ours.
    """
    if configured is None:
        return []
    path, data = configured
    served = first_pem_certificate(data)
    if served is None or issued_by(served, ca.certificate):
        return []
    issuer = served.issuer.rfc4514_string() or "an empty issuer"
    kind = "self-signed" if served.issuer == served.subject else f"issued by {issuer}"
    return [
        f"the server serves {path} today ({kind}); it is replaced by a certificate from the pgbatten CA"
        f" (SHA-256 {fingerprint_sha256(ca.certificate)}): clients that verify the server (verify-ca,"
        " verify-full) against the old one or its CA need the pgbatten CA certificate instead"
    ]


def server_certificate(
    installed: tuple[bytes | None, bytes | None],
    request: SecureRequest,
    ca: AnyCA,
    hosts: Sequence[str],
    revoked: Collection[int],
    now: dt.datetime,
    notes: list[str],
    provided: IssuedCertificate | None = None,
) -> tuple[x509.Certificate, IssuedCertificate | None]:
    """Install the certificate provided; else reuse the installed one (``installed``: pgbatten's certificate
    and key files in the cluster) when it still fits; else issue one."""
    if provided is not None:
        return check_provided(provided, ca, hosts, revoked), provided
    cert_pem, key_pem = installed
    reusable = reusable_certificate(
        cert_pem,
        key_pem,
        ca,
        hosts,
        request.key_type,
        now,
        legacy_ip_sans=request.legacy_ip_sans,
    )
    if reusable is not None and reusable.serial_number in revoked:
        notes.append(
            f"the installed server certificate (serial {reusable.serial_number:#x}) is revoked in the CA"
            " inventory: issuing a new one"
        )
        reusable = None
    if reusable is not None:
        return reusable, None
    if isinstance(ca, CACertificate):
        return keyless_stand_in(request, hosts, now, notes)
    issued = ca.issue_server(
        hosts, key_type=request.key_type, days=request.days, now=now, ip_as_dns=request.legacy_ip_sans
    )
    return issued.certificate, issued


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The SANs of a certificate in order, names and addresses as text, each once.

    A reused certificate may carry names from an earlier ``--host``; the client instructions and the login
    proofs follow what the served certificate really says.
    """
    return tuple(dict.fromkeys(host_names(certificate)))


def _ip_dns_names(certificate: x509.Certificate) -> set[str]:
    """DNS SANs that spell an IP address (what ``--legacy-ip-sans`` adds for libpq before 15)."""
    found = set()
    for name in dns_names(certificate):
        try:
            found.add(str(ipaddress.ip_address(name)))
        except ValueError:
            continue
    return found


def reusable_certificate(
    cert_pem: bytes | None,
    key_pem: bytes | None,
    ca: AnyCA,
    hosts: Sequence[str],
    key_type: KeyType,
    now: dt.datetime,
    *,
    legacy_ip_sans: bool = False,
) -> x509.Certificate | None:
    """The installed certificate if it is ours, covers every host, has its key, and is not about to end.

    With ``legacy_ip_sans`` it must also name each address as a DNS name; without, it must not, so that
    dropping the option takes effect on the next run.
    """
    if cert_pem is None or key_pem is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        certificate.verify_directly_issued_by(ca.certificate)
        key = load_private_key_pem(key_pem)
    except (ValueError, TypeError, PKIError, InvalidSignature):
        return None
    if not public_key_matches(key, certificate) or key_type_of(key) != key_type:
        return None
    if certificate.not_valid_after_utc - RENEW_BEFORE < now:
        return None
    present = set(host_names(certificate))
    if not all(str(classify_host(h)) in present for h in hosts):
        return None
    addresses = {str(ip) for ip in ip_addresses(certificate)}
    as_dns = _ip_dns_names(certificate)
    if legacy_ip_sans and not addresses <= as_dns:
        return None
    if not legacy_ip_sans and as_dns:
        return None
    return certificate
