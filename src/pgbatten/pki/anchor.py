"""A CA known by its certificate alone: what a fleet's server holds while the key stays on the control node.

It can be trusted and checked against, never sign: code that needs to issue takes a ``CertificateAuthority``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pgbatten.errors import PKIError


@dataclass(frozen=True)
class CACertificate:
    """The issuing root (``certificate``) and any other root in force (the retiring one during a rotation)."""

    certificate: x509.Certificate
    others: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pem(cls, data: bytes, *, label: str = "the CA certificate") -> CACertificate:
        """The roots of a PEM bundle, the issuing one first (as ``roots.crt`` and ``ca sign`` write them)."""
        try:
            roots = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise PKIError(f"{label} is not a readable PEM certificate: {exc}") from exc
        if not roots:
            raise PKIError(f"{label} holds no certificate")
        for root in roots:
            try:
                constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                constraints = None
            if constraints is None or not constraints.ca:
                subject = root.subject.rfc4514_string()
                raise PKIError(f"{label} holds {subject}, which is not a CA certificate")
        return cls(certificate=roots[0], others=tuple(roots[1:]))

    def cert_pem(self) -> bytes:
        """Every root, the issuing one first: the server's ``ssl_ca_file``, the clients' ``sslrootcert``."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.others))
