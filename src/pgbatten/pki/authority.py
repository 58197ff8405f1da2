"""An in-memory certificate authority: creates its root, issues server and client certificates, signs CRLs.

Nothing here touches the disk; ``pgbatten.pki.store`` persists a CA and ``pgbatten.pki.bundle`` writes what a
client needs.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgbatten.certfacts import fingerprint_sha256
from pgbatten.errors import PKIError, UsageError
from pgbatten.pki.keys import (
    KeyType,
    PrivateKey,
    generate_key,
    pkcs12_bundle,
    private_key_pem,
    private_key_pk8_der,
    public_key_matches,
)
from pgbatten.pki.names import classify_host, subject_alt_names

# Certificates start a little in the past so a client whose clock lags the CA's still accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)
# PostgreSQL truncates identifiers to NAMEDATALEN-1 bytes, so a longer CN could never match a role.
MAX_ROLE_NAME_BYTES = 63
# X.509's upper bound for commonName (RFC 5280 ub-common-name), in characters.
MAX_COMMON_NAME = 64
# The alias of the key entry in client PKCS#12 files; see IssuedCertificate.pkcs12.
PKCS12_ALIAS = b"user"


def utc_now(now: dt.datetime | None = None) -> dt.datetime:
    """``now`` as UTC (the current time when None); a naive datetime is a programming error."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("'now' must be a timezone-aware datetime")
    return now.astimezone(dt.UTC)


def _check_days(days: int) -> None:
    if days < 1:
        raise UsageError(f"validity must be at least one day, not {days}")


def _hash_for(key: PrivateKey) -> hashes.SHA256:
    # SHA-256 suits P-256 and every RSA size we issue; P-384 would want SHA-384 if it is ever added.
    return hashes.SHA256()


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate with its private key and the intermediates between it and the root (none yet)."""

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
    """A root certificate and its key. Build one with ``create`` or load one with ``CAStore.load``."""

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)

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
        _check_days(days)
        now = utc_now(now)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(common_name))])
        key = generate_key(key_type)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            # No path length limit so an intermediate can be added later without re-rolling the root that
            # every client already trusts.
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, _hash_for(key))
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
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A server certificate with every host in subjectAltName (IPs typed as IPAddress)."""
        if isinstance(hosts, str):
            raise TypeError("hosts must be a sequence of host names, not one string")
        san = subject_alt_names(hosts)
        if common_name is None:
            classified = [classify_host(h) for h in hosts]
            dns = [h for h in classified if isinstance(h, str)]
            common_name = dns[0] if dns else str(classified[0])
            # A long DNS name cannot be a CN; leave the subject empty and rely on the SAN, as RFC 5280 allows.
            subject_cn = common_name if len(common_name) <= MAX_COMMON_NAME else None
        else:
            subject_cn = _common_name(common_name)
        key = generate_key(key_type)
        return self._issue(
            key=key,
            subject_cn=subject_cn,
            san=san,
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
            key_encipherment=key_type.is_rsa,
            days=days,
            now=now,
        )

    def issue_client(
        self,
        user: str,
        *,
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = 365,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A client certificate whose CN is exactly the PostgreSQL role name ``user``."""
        check_role_name(user)
        key = generate_key(key_type)
        return self._issue(
            key=key,
            subject_cn=user,
            san=None,
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
            key_encipherment=False,
            days=days,
            now=now,
        )

    def _issue(
        self,
        *,
        key: PrivateKey,
        subject_cn: str | None,
        san: x509.SubjectAlternativeName | None,
        eku: x509.ObjectIdentifier,
        key_encipherment: bool,
        days: int,
        now: dt.datetime | None,
    ) -> IssuedCertificate:
        _check_days(days)
        now = utc_now(now)
        ca_not_before = self.certificate.not_valid_before_utc
        not_before = max(now - CLOCK_SKEW, ca_not_before)
        # A leaf outliving its root would just fail verification later, so cut it to the root's lifetime.
        not_after = min(now + dt.timedelta(days=days), self.not_after)
        if not_after <= now:
            raise PKIError(
                f"the CA certificate expired on {self.not_after:%Y-%m-%d %H:%M} UTC; create a new CA"
            )
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)] if subject_cn is not None else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=key_encipherment,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        if san is not None:
            # RFC 5280 4.2.1.6: with an empty subject the SAN must be critical.
            builder = builder.add_extension(san, critical=subject_cn is None)
        certificate = builder.sign(self.key, _hash_for(self.key))
        return IssuedCertificate(certificate=certificate, key=key)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            # A CA made elsewhere may lack an SKI; derive the same value from its key.
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def build_crl(
        self,
        revoked: Sequence[tuple[int, dt.datetime]],
        *,
        number: int,
        days: int = 30,
        now: dt.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``(serial, revoked_at)`` pairs, numbered ``number``, valid until ``now + days``."""
        _check_days(days)
        if number < 0:
            raise ValueError("CRL number must not be negative")
        now = utc_now(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for serial, revoked_at in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(utc_now(revoked_at))
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self.key, _hash_for(self.key))


def check_role_name(user: str) -> None:
    """``UsageError`` unless ``user`` can be a PostgreSQL role name that a certificate CN can match."""
    if not user:
        raise UsageError("the user name must not be empty")
    if any(unicodedata.category(ch) == "Cc" for ch in user):
        raise UsageError(f"invalid user name {user!r}: control characters are not allowed")
    if len(user.encode()) > MAX_ROLE_NAME_BYTES:
        raise UsageError(
            f"invalid user name {user!r}: longer than {MAX_ROLE_NAME_BYTES} bytes, "
            "PostgreSQL's limit for role names"
        )


def _common_name(text: str) -> str:
    if not text or len(text) > MAX_COMMON_NAME:
        raise UsageError(f"invalid common name {text!r}: must be 1 to {MAX_COMMON_NAME} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise UsageError(f"invalid common name {text!r}: control characters are not allowed")
    return text
