"""The control node's half: check a server's CSR and sign it with the CA, recording it in the inventory.

What the host receives back is everything it needs to install the certificate without the CA: the leaf with
the chain it must serve (the cross certificate during a CA rotation), the roots it trusts (``ssl_ca_file``,
both roots during an overlap) and, when there is one, the CRL of every CA in force.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pgbatten.certfacts import fingerprint_sha256, san_strings
from pgbatten.pki import InventoryEntry
from pgbatten.pki.csr import CsrPolicy, ServerRequest, check_server_csr, load_csr
from pgbatten.pki.operations import open_store
from pgbatten.pki.overlap import crl_bundle, load_rotation, trust_for
from pgbatten.timestamps import iso

JSON_SCHEMA = "pgbatten.ca-sign/1"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class SignedServer:
    """A signed server certificate and what the host installs beside it."""

    request: ServerRequest
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    roots_pem: bytes
    crl_pem: bytes | None
    ca_dir: Path
    entry: InventoryEntry | None = field(default=None)
    """None for a dry run, which signs nothing and records nothing."""

    def cert_pem(self) -> bytes:
        """The leaf, then the chain the server must serve after it."""
        return b"".join(_pem(c) for c in (self.certificate, *self.chain))

    def to_json(self) -> dict[str, Any]:
        cert = self.certificate
        return {
            "schema": JSON_SCHEMA,
            "ca_dir": str(self.ca_dir),
            "signed": self.entry is not None,
            "hosts": list(self.request.hosts),
            "key_type": self.request.key_type.value,
            "serial": str(cert.serial_number),
            "subject": cert.subject.rfc4514_string(),
            "sans": list(san_strings(cert)),
            "not_after": iso(cert.not_valid_after_utc),
            "fingerprint_sha256": fingerprint_sha256(cert),
            "certificate": self.cert_pem().decode(),
            "ca_certificate": self.roots_pem.decode(),
            "crl": self.crl_pem.decode() if self.crl_pem is not None else None,
        }


def sign_server_csr(
    ca_dir: Path,
    csr: bytes,
    *,
    policy: CsrPolicy,
    days: int = 365,
    name: str | None = None,
    passphrase: bytes | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> SignedServer:
    """Check ``csr`` against ``policy`` and sign it with the CA in ``ca_dir`` (``PKIError`` when refused).

    The inventory records the certificate as a server certificate named ``name`` (default: its first host).
    ``dry_run`` checks the request and reads the CA key, then signs with it only in memory: nothing is
    recorded and the returned certificate must not be installed.
    """
    store = open_store(ca_dir)
    request = check_server_csr(load_csr(csr), policy)
    authority = store.load(passphrase)
    certificate = authority.certify_server_key(request.public_key, request.hosts, days=days, now=now)
    # Everything that can fail is done before the certificate is recorded as issued.
    trust = trust_for(store, authority)
    rotation = load_rotation(store.path)
    crl_pem = crl_bundle([store, *([rotation.previous] if rotation is not None else [])])
    entry = None
    if not dry_run:
        entry = InventoryEntry(
            kind="server",
            name=name or request.hosts[0],
            serial=certificate.serial_number,
            not_after=certificate.not_valid_after_utc,
            fingerprint_sha256=fingerprint_sha256(certificate),
        )
        store.inventory.add(entry)
    return SignedServer(
        request=request,
        certificate=certificate,
        chain=authority.chain or trust.chain,
        roots_pem=trust.roots_pem(),
        crl_pem=crl_pem,
        ca_dir=store.path,
        entry=entry,
    )


@dataclass(frozen=True)
class ServerTrust:
    """What every server of the CA installs beside its own certificate: the roots in force and the CRL."""

    ca_dir: Path
    roots_pem: bytes
    crl_pem: bytes | None
    fingerprints: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ca_dir": str(self.ca_dir),
            "ca_certificate": self.roots_pem.decode(),
            "crl": self.crl_pem.decode() if self.crl_pem is not None else None,
            "fingerprints_sha256": list(self.fingerprints),
        }


def server_trust(ca_dir: Path) -> ServerTrust:
    """The roots and CRL of the CA in ``ca_dir``; reads no key."""
    store = open_store(ca_dir)
    trust = trust_for(store)
    rotation = load_rotation(store.path)
    return ServerTrust(
        ca_dir=store.path,
        roots_pem=trust.roots_pem(),
        crl_pem=crl_bundle([store, *([rotation.previous] if rotation is not None else [])]),
        fingerprints=tuple(fingerprint_sha256(r) for r in trust.roots),
    )
