"""Which CA issues, which roots a server trusts, and which chain it serves — one CA, or two in an overlap.

Pure. Outside a rotation this is one CA: it issues, it is the one root in ``ssl_ca_file``, and the server
serves its leaf alone. During a rotation (see :mod:`pgbatten.lifecycle.rotation`; its state on disk is read by
:mod:`pgbatten.pki.overlap`) the new CA issues, the
server trusts both roots (client certificates of either CA are accepted), and serves its leaf followed by
the *cross certificate* — the new CA's name and key certified by the old CA — so that a client holding only
the old root still builds a path to it, while clients holding the new root stop at the new root.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pgbatten.pki.authority import CertificateAuthority


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Trust:
    """The CA that issues now, and during an overlap the root it replaces and the cross certificate.

    ``authority`` (with its key) is only needed to issue; deciding what is due needs ``root`` alone, so a
    run with nothing due never reads the CA key or its passphrase.
    """

    root: x509.Certificate
    previous: x509.Certificate | None = None
    cross: x509.Certificate | None = None
    retired: tuple[x509.Certificate, ...] = ()
    """Roots of CAs retired earlier: a leaf of theirs still installed somewhere is due at once."""
    authority: CertificateAuthority | None = None

    @classmethod
    def of(cls, authority: CertificateAuthority, **others: object) -> Trust:
        """The trust of ``authority`` (which can then issue)."""
        return cls(root=authority.certificate, authority=authority, **others)  # type: ignore[arg-type]

    def signer(self) -> CertificateAuthority:
        """The CA with its key; ``PKIError`` when it was not loaded."""
        if self.authority is None:
            from pgbatten.errors import PKIError

            raise PKIError("the CA key is needed to issue but was not loaded")
        return self.authority

    @property
    def rotating(self) -> bool:
        return self.previous is not None

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The roots a server trusts for client certificates and a client needs: new first, then old."""
        return (self.root, self.previous) if self.previous is not None else (self.root,)

    def roots_pem(self) -> bytes:
        """``ssl_ca_file`` and the ``root.crt`` handed out: every root in force."""
        return b"".join(pem(c) for c in self.roots)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """What a server serves after its leaf: the cross certificate during an overlap, else nothing."""
        return (self.cross,) if self.cross is not None else ()

    def issued_here(self, cert: x509.Certificate) -> bool:
        """Whether the CA that issues now signed ``cert``."""
        from pgbatten.certfacts import issued_by

        return issued_by(cert, self.root)

    def issued_by_previous(self, cert: x509.Certificate) -> bool:
        """Whether the retiring CA, or one retired earlier, signed ``cert``."""
        from pgbatten.certfacts import issued_by

        olds = (*((self.previous,) if self.previous is not None else ()), *self.retired)
        return any(issued_by(cert, old) for old in olds)
