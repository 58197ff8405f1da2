"""Facts about X.509 certificates, read one way for every part of pgbatten.

The subjectAltNames, the fingerprint (one format: SHA-256, colon-separated upper-case hex, as
``openssl x509 -fingerprint -sha256`` prints it), the key type and size, self-signedness, and loading PEM
files and DER chains. ``probe`` describes served chains with it, ``pki`` records issued certificates,
``secure`` decides whether an installed certificate covers the hosts, and the demo shows what a client saw.
Pure: no I/O except the explicit file loader, no policy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from pgbatten.errors import FileProblem

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:…`` (OpenSSL's format)."""
    return format_fingerprint(cert.fingerprint(hashes.SHA256()).hex())


def format_fingerprint(hex_digest: str) -> str:
    """Any spelling of a hex digest (``abcd…``, ``AB:CD:…``) in the one format pgbatten prints and stores."""
    digits = hex_digest.replace(":", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def serial_hex(serial: int) -> str:
    """A serial number as upper-case hex without prefix, as ``check`` reports it."""
    return format(serial, "X")


def subject_alt_names(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    """The subjectAltName extension, None when absent. An unparseable one raises ``ValueError``."""
    try:
        value = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return value


def _san_or_none(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return subject_alt_names(cert)
    except ValueError:
        return None


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names among the SANs, in order (none when the extension is absent or unreadable)."""
    san = _san_or_none(cert)
    return tuple(san.get_values_for_type(x509.DNSName)) if san is not None else ()


def ip_addresses(cert: x509.Certificate) -> tuple[IpAddress, ...]:
    """The IP addresses among the SANs, in order (address ranges are not addresses and are left out)."""
    san = _san_or_none(cert)
    if san is None:
        return ()
    return tuple(v for v in san.get_values_for_type(x509.IPAddress) if isinstance(v, IpAddress))


def host_names(cert: x509.Certificate) -> tuple[str, ...]:
    """Every DNS name and IP address among the SANs as text, in certificate order."""
    san = _san_or_none(cert)
    if san is None:
        return ()
    return tuple(str(name.value) for name in san if isinstance(name, x509.DNSName | x509.IPAddress))


def san_strings(cert: x509.Certificate) -> tuple[str, ...]:
    """The SANs as ``DNS:…``, ``IP:…``, ``email:…``, ``URI:…`` (OpenSSL's spelling), in order."""
    san = _san_or_none(cert)
    if san is None:
        return ()
    out: list[str] = []
    for gn in san:
        if isinstance(gn, x509.DNSName):
            out.append(f"DNS:{gn.value}")
        elif isinstance(gn, x509.IPAddress):
            out.append(f"IP:{gn.value}")
        elif isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"URI:{gn.value}")
    return tuple(out)


def key_facts(key: Any) -> tuple[str, int | None]:
    """(type, size in bits) of a public key: ``("RSA", 2048)``, ``("EC", 256)``, ``("Ed25519", 256)``…"""
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, None


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # wrong signature, unsupported algorithm: not provably self-signed
        return False
    return True


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``cert`` (names match and the signature verifies)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # wrong name, wrong signature, unsupported algorithm: not issued by it
        return False
    return True


@dataclass(frozen=True)
class CertificateInfo:
    """The facts about a certificate that a reader acts on."""

    subject: str
    issuer: str
    sans: tuple[str, ...]
    key_type: str
    key_size: int | None
    signature_algorithm: str
    signature_hash: str | None
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool
    serial: str
    sha256: str

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> CertificateInfo:
        """Describe ``cert``; an algorithm cryptography cannot load is reported, never raised."""
        try:
            key_type, key_size = key_facts(cert.public_key())
        except (ValueError, UnsupportedAlgorithm) as exc:
            # GOST, SM2, explicit EC parameters...: the server chose it, the report says so.
            key_type, key_size = f"unsupported ({_first_line(exc)})", None
        try:
            hash_alg = cert.signature_hash_algorithm
            sig_hash = hash_alg.name if hash_alg is not None else None
        except Exception:  # an unsupported algorithm is a fact to report, not a crash
            sig_hash = None
        oid = cert.signature_algorithm_oid
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=san_strings(cert),
            key_type=key_type,
            key_size=key_size,
            signature_algorithm=getattr(oid, "_name", None) or oid.dotted_string,
            signature_hash=sig_hash,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            self_signed=is_self_signed(cert),
            serial=serial_hex(cert.serial_number),
            sha256=fingerprint_sha256(cert),
        )


def load_der_chain(ders: Sequence[bytes]) -> tuple[list[x509.Certificate], str | None]:
    """The certificates of a chain as received (leaf first), and why the rest could not be read, if so."""
    certs: list[x509.Certificate] = []
    for der in ders:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            return certs, f"unparseable certificate in the chain: {exc}"
    return certs, None


def first_pem_certificate(data: bytes | None) -> x509.Certificate | None:
    """The first certificate of PEM ``data`` (a file's bytes, None when it is missing); None if unreadable."""
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return None


def load_pem_file(path: Path | str) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA bundle may hold several, intermediates too)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FileProblem(path, exc.strerror or str(exc)) from exc
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise FileProblem(path, f"not a PEM certificate file: {exc}") from exc


__all__ = [
    "CertificateInfo",
    "IpAddress",
    "dns_names",
    "fingerprint_sha256",
    "first_pem_certificate",
    "format_fingerprint",
    "host_names",
    "ip_addresses",
    "is_self_signed",
    "issued_by",
    "key_facts",
    "load_der_chain",
    "load_pem_file",
    "san_strings",
    "serial_hex",
    "subject_alt_names",
]
