"""An in-memory certificate authority: creates its root, issues server and client certificates, signs CRLs.

Nothing here touches the disk; ``pgbatten.pki.store`` persists a CA and ``pgbatten.pki.bundle`` writes what a
client needs. Every certificate comes from ``pgbatten.pki.certbuild``'s one builder; CRLs are signed by
``pgbatten.pki.revocation``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgbatten.certfacts import fingerprint_sha256
from pgbatten.errors import PKIError, UsageError
from pgbatten.pki.certbuild import (
    CLOCK_SKEW,
    MAX_COMMON_NAME,
    build_certificate,
    check_days,
    check_role_name,
    checked_common_name,
    subject_name,
    utc_now,
)
from pgbatten.pki.keys import (
    KeyType,
    PrivateKey,
    generate_key,
    key_type_of,
    pkcs12_bundle,
    private_key_pem,
    private_key_pk8_der,
    public_key_matches,
)
from pgbatten.pki.names import classify_host, subject_alt_names
from pgbatten.pki.revocation import Revocation, sign_crl

# The alias of the key entry in client PKCS#12 files; see IssuedCertificate.pkcs12.
PKCS12_ALIAS = b"user"


@dataclass(frozen=True)
class _Leaf:
    """What a leaf certificate says besides its key and dates: the CA's server or client profile."""

    subject_cn: str | None
    eku: x509.ObjectIdentifier
    san: x509.SubjectAlternativeName | None = None
    key_encipherment: bool = False
    serial: int | None = None
    """A stand-in's serial; None draws a random one."""


def _server_cn(hosts: Sequence[str]) -> str | None:
    """A server certificate's CN: its first DNS name, else its first address; None when too long to be a
    CN (the subject stays empty and the SAN alone names the server, as RFC 5280 allows)."""
    classified = [classify_host(h) for h in hosts]
    dns = [h for h in classified if isinstance(h, str)]
    common_name = dns[0] if dns else str(classified[0])
    return common_name if len(common_name) <= MAX_COMMON_NAME else None


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate with its private key and the CA certificates between it and the root.

    ``chain`` is empty for a leaf of the root itself; a leaf of a CA that is also vouched for by another
    root (see ``CertificateAuthority.chain``) carries the cross certificate, so a client that trusts only
    the other root can still build a path.
    """

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not public_key_matches(self.key, self.certificate):
            raise PKIError("the private key does not belong to the certificate")

    def cert_pem(self) -> bytes:
        """The leaf, then any intermediates: the certificate file carries the full chain when one exists."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain))

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted if ``passphrase`` is given."""
        return private_key_pem(self.key, passphrase)

    def key_pk8_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER (PgJDBC's ``.pk8``)."""
        return private_key_pk8_der(self.key)

    def pkcs12(self, password: bytes, ca: x509.Certificate | None = None) -> bytes:
        """Key, leaf, intermediates and (if given) the root in one password-protected PKCS#12 file."""
        cas = (*self.chain, ca) if ca is not None else self.chain
        # PgJDBC's PKCS12KeyManager looks the key up under the hard-coded alias "user" and sends no
        # certificate otherwise (pgjdbc#2856, #3661); .NET and Windows treat the name as a mere label.
        return pkcs12_bundle(self.key, self.certificate, password, cas=cas, friendly_name=PKCS12_ALIAS)

    @property
    def serial(self) -> int:
        """The certificate's serial number."""
        return self.certificate.serial_number

    @property
    def not_after(self) -> dt.datetime:
        """End of validity, timezone-aware UTC."""
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint_sha256(self) -> str:
        """SHA-256 of the DER certificate, in :func:`certfacts.fingerprint_sha256`'s format."""
        return fingerprint_sha256(self.certificate)


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its key. Build one with ``create`` or load one with ``CAStore.load``.

    ``chain`` holds certificates that vouch for this CA beyond its own (self-signed) certificate: the cross
    certificate another root issued for it during a CA rotation. Every leaf it issues carries them.
    """

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not public_key_matches(self.key, self.certificate):
            raise PKIError("the CA key does not belong to the CA certificate")

    @classmethod
    def create(
        cls,
        common_name: str = "pgbatten CA",
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = 3650,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """A new self-signed root valid from ``now`` (minus clock skew) for ``days`` days."""
        check_days(days)
        now = utc_now(now)
        name = subject_name(checked_common_name(common_name))
        key = generate_key(key_type)
        certificate = build_certificate(
            subject=name,
            public_key=key.public_key(),
            issuer=name,
            signing_key=key,
            serial=x509.random_serial_number(),
            not_before=now - CLOCK_SKEW,
            not_after=now + dt.timedelta(days=days),
            is_ca=True,
        )
        return cls(certificate=certificate, key=key)

    @property
    def not_after(self) -> dt.datetime:
        """End of the root's validity, timezone-aware UTC."""
        return self.certificate.not_valid_after_utc

    def cert_pem(self) -> bytes:
        """The root certificate in PEM: what clients use as ``sslrootcert``."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self,
        hosts: Sequence[str],
        *,
        common_name: str | None = None,
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = 365,
        not_after: dt.datetime | None = None,
        now: dt.datetime | None = None,
        ip_as_dns: bool = False,
    ) -> IssuedCertificate:
        """A server certificate with every host in subjectAltName (IPs typed as IPAddress).

        Valid for ``days``, or until ``not_after`` when given; never beyond the CA's own end.

        ``ip_as_dns`` also writes each IP address as a DNS name, which libpq before 15 compares the host
        against (it ignores IP SANs); see ``secure --legacy-ip-sans``.
        """
        if isinstance(hosts, str):
            raise TypeError("hosts must be a sequence of host names, not one string")
        leaf = _Leaf(
            subject_cn=_server_cn(hosts) if common_name is None else checked_common_name(common_name),
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
            san=subject_alt_names(hosts, ip_as_dns=ip_as_dns),
            key_encipherment=key_type.is_rsa,
        )
        return self._issue(generate_key(key_type), leaf, self._until(days, not_after, now), now)

    def issue_client(
        self,
        user: str,
        *,
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = 365,
        not_after: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A client certificate whose CN is exactly the PostgreSQL role name ``user``.

        Valid for ``days``, or until ``not_after`` when given; never beyond the CA's own end.
        """
        check_role_name(user)
        leaf = _Leaf(subject_cn=user, eku=ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._issue(generate_key(key_type), leaf, self._until(days, not_after, now), now)

    def issue_stand_in(
        self,
        serial: int,
        *,
        common_name: str,
        lifetime: dt.timedelta,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A short-lived client certificate carrying ``serial``, to prove what a server does with that serial.

        A server looks a client certificate up in its CRL by issuer and serial, so it refuses the stand-in
        exactly when the CRL it has loaded revokes ``serial``: a proof of revocation that needs no user's
        private key. Never record or hand out a stand-in: it shares a serial with a real certificate.
        """
        if not 0 < serial < 2**159:
            raise ValueError("a serial number must be positive and at most 159 bits")
        if lifetime <= dt.timedelta(0):
            raise ValueError("a stand-in needs a positive lifetime")
        leaf = _Leaf(
            subject_cn=checked_common_name(common_name), eku=ExtendedKeyUsageOID.CLIENT_AUTH, serial=serial
        )
        return self._issue(generate_key(), leaf, utc_now(now) + lifetime, now)

    # -- CA rotation ---------------------------------------------------------------------------------------

    def cross_sign(self, subject: x509.Certificate, *, now: dt.datetime | None = None) -> x509.Certificate:
        """``subject``'s name and key (another CA) certified by this CA: the cross certificate of a rotation.

        A client that trusts only this CA builds leaf -> cross certificate -> this root; one that trusts the
        other root stops there, since the cross certificate carries the same name, key and key identifier.
        It never outlives either CA.
        """
        now = utc_now(now)
        try:
            subject_ski = subject.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            subject_ski = x509.SubjectKeyIdentifier.from_public_key(subject.public_key())
        not_after = min(self.not_after, subject.not_valid_after_utc)
        if not_after <= now:
            raise PKIError("one of the two CAs has ended: there is no overlap left to bridge")
        return build_certificate(
            subject=subject.subject,
            public_key=subject.public_key(),
            issuer=self.certificate.subject,
            signing_key=self.key,
            serial=x509.random_serial_number(),
            not_before=max(now - CLOCK_SKEW, self.certificate.not_valid_before_utc),
            not_after=not_after,
            is_ca=True,
            authority_key_id=self._authority_key_identifier(),
            subject_key_id=subject_ski,
        )

    def next_ca(
        self,
        *,
        common_name: str | None = None,
        key_type: KeyType | None = None,
        days: int = 3650,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """A new root to rotate to, vouched for by this one: its ``chain`` holds the cross certificate.

        Same name and key type as this CA unless given. Every leaf the new CA issues carries the cross
        certificate after it (``IssuedCertificate.chain``), so a server serving it stays verifiable by
        clients that hold only this (old) root, through the whole overlap.
        """
        name = common_name
        if name is None:
            found = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            name = str(found[0].value) if found else "pgbatten CA"
        kind = key_type if key_type is not None else key_type_of(self.key)
        successor = CertificateAuthority.create(common_name=name, key_type=kind, days=days, now=now)
        return successor.with_cross(self.cross_sign(successor.certificate, now=now))

    def with_cross(self, cross: x509.Certificate) -> CertificateAuthority:
        """This CA, with ``cross`` (a certificate of this CA's name and key by another CA) as its chain."""
        if cross.subject != self.certificate.subject or not _same_key(cross, self.certificate):
            raise PKIError("the cross certificate does not certify this CA's name and key")
        return replace(self, chain=(cross,))

    def _until(self, days: int, not_after: dt.datetime | None, now: dt.datetime | None) -> dt.datetime:
        if not_after is not None:
            return utc_now(not_after)
        check_days(days)
        return utc_now(now) + dt.timedelta(days=days)

    def certify_server_key(
        self,
        public_key: CertificatePublicKeyTypes,
        hosts: Sequence[str],
        *,
        days: int = 365,
        not_after: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A server certificate for a key this CA never sees (from a CSR), as ``issue_server`` makes one.

        The caller checks what the request asked for (``pgbatten.pki.csr``); only ``hosts`` and the key come
        from it, every other field is this CA's own server profile.
        """
        if isinstance(hosts, str):
            raise TypeError("hosts must be a sequence of host names, not one string")
        leaf = _Leaf(
            subject_cn=_server_cn(hosts),
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
            san=subject_alt_names(hosts),
            key_encipherment=not isinstance(public_key, ec.EllipticCurvePublicKey),
        )
        return self._certify(public_key, leaf, self._until(days, not_after, now), now)

    def _issue(
        self, key: PrivateKey, leaf: _Leaf, until: dt.datetime, now: dt.datetime | None
    ) -> IssuedCertificate:
        certificate = self._certify(key.public_key(), leaf, until, now)
        return IssuedCertificate(certificate=certificate, key=key, chain=self.chain)

    def _certify(
        self, public_key: CertificatePublicKeyTypes, leaf: _Leaf, until: dt.datetime, now: dt.datetime | None
    ) -> x509.Certificate:
        now = utc_now(now)
        not_before = max(now - CLOCK_SKEW, self.certificate.not_valid_before_utc)
        # No leaf outlives its CA: it would only fail verification later, so cut it to the CA's lifetime.
        not_after = min(until, self.not_after)
        if self.not_after <= now:
            raise PKIError(
                f"the CA certificate expired on {self.not_after:%Y-%m-%d %H:%M} UTC; create a new CA"
            )
        if not_after <= now:
            raise UsageError(f"the end of validity {until:%Y-%m-%d %H:%M} UTC is not in the future")
        if now < self.certificate.not_valid_before_utc - CLOCK_SKEW:
            raise PKIError(
                f"the CA certificate is valid only from "
                f"{self.certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clock"
            )
        return build_certificate(
            subject=subject_name(leaf.subject_cn),
            public_key=public_key,
            issuer=self.certificate.subject,
            signing_key=self.key,
            serial=leaf.serial if leaf.serial is not None else x509.random_serial_number(),
            not_before=not_before,
            not_after=not_after,
            is_ca=False,
            key_encipherment=leaf.key_encipherment,
            extended_usage=leaf.eku,
            san=leaf.san,
            authority_key_id=self._authority_key_identifier(),
        )

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            # A CA made elsewhere may lack an SKI; derive the same value from its key.
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def build_crl(
        self,
        revoked: Iterable[Revocation | tuple[int, dt.datetime]],
        *,
        number: int,
        days: int = 30,
        now: dt.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL of ``revoked``, numbered ``number``, valid until ``now + days`` (see :func:`sign_crl`)."""
        return sign_crl(
            self.certificate,
            self.key,
            self._authority_key_identifier(),
            revoked,
            number=number,
            days=days,
            now=now,
        )


def _same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(*spki) == b.public_key().public_bytes(*spki)
