"""A certificate signed elsewhere for a key on this server: ``secure --certificate`` with the CA's key away.

The key is the one ``pgbatten csr`` made here (``pgbatten-server.key.pending``), or the key in use when the
CA re-signed it. Nothing is accepted that does not pair with a key on this machine, so a certificate meant
for another server cannot be installed here by mistake; and it must be the CA's and name every host the
plan needs, or the proofs that follow would fail anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import host_names, issued_by
from pgbatten.errors import PKIError
from pgbatten.fsutil import read_bytes_or_none
from pgbatten.pki import CACertificate, CertificateAuthority, IssuedCertificate, KeyType, classify_host
from pgbatten.pki.keys import PrivateKey, load_private_key_pem, public_key_matches
from pgbatten.secure.request import SecureRequest


def load_provided(
    certificate: bytes, key_paths: Sequence[Path], existing: Mapping[Path, bytes]
) -> tuple[IssuedCertificate, Path]:
    """The certificate (with its chain) paired with its key among ``key_paths``, and that key's path."""
    try:
        certs = x509.load_pem_x509_certificates(certificate)
    except ValueError as exc:
        raise PKIError(f"the certificate given is not readable PEM: {exc}") from exc
    if not certs:
        raise PKIError("the certificate given holds no certificate")
    leaf, chain = certs[0], tuple(certs[1:])
    for path in key_paths:
        key = _key(existing[path] if path in existing else read_bytes_or_none(path), path)
        if key is not None and public_key_matches(key, leaf):
            return IssuedCertificate(certificate=leaf, key=key, chain=chain), path
    names = " nor ".join(p.name for p in key_paths)
    raise PKIError(
        f"the certificate given is not for a key on this server (neither {names} in"
        f" {key_paths[0].parent}): make the CSR here with pgbatten csr and install what was signed for it"
    )


def _key(data: bytes | None, path: Path) -> PrivateKey | None:
    if data is None:
        return None
    try:
        return load_private_key_pem(data, label=str(path))
    except PKIError:
        return None


def check_provided(
    provided: IssuedCertificate,
    ca: CertificateAuthority | CACertificate,
    hosts: Sequence[str],
    revoked: Collection[int],
) -> x509.Certificate:
    """The certificate signed elsewhere must be the CA's, unrevoked, and name every host the plan needs."""
    cert = provided.certificate
    if not issued_by(cert, ca.certificate):
        raise PKIError(
            f"the certificate given was issued by {cert.issuer.rfc4514_string()}, not by the CA given"
            f" ({ca.certificate.subject.rfc4514_string()})"
        )
    if cert.serial_number in revoked:
        raise PKIError(f"the certificate given (serial {cert.serial_number:#x}) is revoked")
    present = set(host_names(cert))
    missing = [h for h in hosts if str(classify_host(h)) not in present]
    if missing:
        raise PKIError(
            f"the certificate given does not name {', '.join(missing)}, which this server needs (verify-full"
            " by that name would fail); make a new CSR here with pgbatten csr and have it signed"
        )
    return cert


def keyless_stand_in(
    request: SecureRequest,
    hosts: Sequence[str],
    now: dt.datetime,
    notes: list[str],
) -> tuple[x509.Certificate, IssuedCertificate]:
    """No certificate can stay and no CA key is here: a dry run shows the change with a stand-in."""
    if not request.dry_run:
        raise PKIError(
            "the installed server certificate cannot stay and the CA's key is not on this machine: make a"
            " CSR here (pgbatten csr), sign it where the CA is (pgbatten ca sign), then pass it with"
            " --certificate"
        )
    notes.append(
        "a new server certificate is needed: it will be signed by the CA where its key is (pgbatten csr,"
        " pgbatten ca sign); the plan shows a stand-in for it"
    )
    stand_in = CertificateAuthority.create(common_name="stand-in for the CA", key_type=KeyType.ECDSA_P256)
    issued = stand_in.issue_server(hosts, key_type=request.key_type, days=request.days, now=now)
    return issued.certificate, issued
