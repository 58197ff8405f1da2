"""The one certificate builder (roots, cross certificates, leaves, revocation stand-ins) and the rules every
certificate pgbatten makes follows: its clock, its hash, the names it may carry."""

from __future__ import annotations

import datetime as dt
import unicodedata

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from pgbatten.errors import UsageError
from pgbatten.pki.keys import PrivateKey

# Certificates start a little in the past so a client whose clock lags the CA's still accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)
# PostgreSQL truncates identifiers to NAMEDATALEN-1 bytes, so a longer CN could never match a role.
MAX_ROLE_NAME_BYTES = 63
# X.509's upper bound for commonName (RFC 5280 ub-common-name), in characters.
MAX_COMMON_NAME = 64


def utc_now(now: dt.datetime | None = None) -> dt.datetime:
    """``now`` as UTC (the current time when None); a naive datetime is a programming error."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("'now' must be a timezone-aware datetime")
    return now.astimezone(dt.UTC)


def check_days(days: int) -> None:
    if days < 1:
        raise UsageError(f"validity must be at least one day, not {days}")


# SHA-256 suits P-256 and every RSA size we issue; P-384 would want SHA-384 if it is ever added.
SIGNATURE_HASH = hashes.SHA256


def build_certificate(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    signing_key: PrivateKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    is_ca: bool,
    key_encipherment: bool = False,
    extended_usage: x509.ObjectIdentifier | None = None,
    san: x509.SubjectAlternativeName | None = None,
    authority_key_id: x509.AuthorityKeyIdentifier | None = None,
    subject_key_id: x509.SubjectKeyIdentifier | None = None,
) -> x509.Certificate:
    """The one certificate builder: roots, cross certificates, leaves and revocation stand-ins.

    A CA certificate may sign certificates and CRLs (and nothing is enciphered with it); a leaf signs its
    handshakes and, for RSA server keys, may be used for key transport. BasicConstraints and KeyUsage are
    critical, as RFC 5280 asks of a CA and as OpenSSL's purpose checks expect.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # No path length limit on a CA so an intermediate can be added later without re-rolling the root
        # that every client already trusts.
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_encipherment and not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if extended_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([extended_usage]), critical=False)
    ski = subject_key_id or x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = builder.add_extension(ski, critical=False)
    if authority_key_id is not None:
        builder = builder.add_extension(authority_key_id, critical=False)
    if san is not None:
        # RFC 5280 4.2.1.6: with an empty subject the SAN must be critical.
        builder = builder.add_extension(san, critical=len(subject) == 0)
    return builder.sign(signing_key, SIGNATURE_HASH())


def subject_name(common_name: str | None) -> x509.Name:
    if common_name is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


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


def checked_common_name(text: str) -> str:
    if not text or len(text) > MAX_COMMON_NAME:
        raise UsageError(f"invalid common name {text!r}: must be 1 to {MAX_COMMON_NAME} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise UsageError(f"invalid common name {text!r}: control characters are not allowed")
    return text
