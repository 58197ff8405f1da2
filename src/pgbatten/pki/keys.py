"""Private keys: choosing a type, generating, and (de)serialising in the formats PostgreSQL clients read."""

from __future__ import annotations

from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from pgbatten.errors import PKIError, UsageError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Java 17's PKCS12 KeyStore and OpenSSL 3 both read PBES2/AES-256 with a SHA-256 MAC; the legacy
# 3DES/RC2 default is rejected by OpenSSL 3 without the legacy provider.
PKCS12_KDF_ROUNDS = 100_000


class KeyType(StrEnum):
    """Key algorithms pgbatten issues. ECDSA P-256 is the default: small keys, the fastest handshakes."""

    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        """Accept the canonical names and common spellings ("ecdsa", "p256", "rsa", "rsa4096", "RSA_3072")."""
        normalized = text.strip().lower().replace("-", "").replace("_", "")
        kind = _ALIASES.get(normalized)
        if kind is None:
            choices = ", ".join(k.value for k in cls)
            raise UsageError(f"unknown key type {text!r}; choose one of {choices}")
        return kind

    @property
    def is_rsa(self) -> bool:
        """True for the RSA variants (they need keyEncipherment on server certificates)."""
        return self is not KeyType.ECDSA_P256


_ALIASES: dict[str, KeyType] = {
    "ecdsap256": KeyType.ECDSA_P256,
    "ecdsa": KeyType.ECDSA_P256,
    "ec": KeyType.ECDSA_P256,
    "p256": KeyType.ECDSA_P256,
    "ecp256": KeyType.ECDSA_P256,
    "prime256v1": KeyType.ECDSA_P256,
    "secp256r1": KeyType.ECDSA_P256,
    "rsa": KeyType.RSA_2048,
    "rsa2048": KeyType.RSA_2048,
    "rsa3072": KeyType.RSA_3072,
    "rsa4096": KeyType.RSA_4096,
}

_RSA_BITS = {KeyType.RSA_2048: 2048, KeyType.RSA_3072: 3072, KeyType.RSA_4096: 4096}


def generate_key(kind: KeyType = KeyType.ECDSA_P256) -> PrivateKey:
    """Generate a fresh private key of ``kind``."""
    if kind is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[kind])


def key_type_of(key: PrivateKey) -> KeyType:
    """The ``KeyType`` of an existing key; ``PKIError`` for curves and sizes pgbatten does not issue."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.ECDSA_P256
        raise PKIError(f"unsupported elliptic curve {key.curve.name}")
    for kind, bits in _RSA_BITS.items():
        if key.key_size == bits:
            return kind
    raise PKIError(f"unsupported RSA key size {key.key_size}")


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when ``passphrase`` is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def private_key_pk8_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER: the ``.pk8`` file PgJDBC's default ``LibPQFactory`` reads."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pkcs12_bundle(
    key: PrivateKey,
    certificate: x509.Certificate,
    password: bytes,
    *,
    cas: tuple[x509.Certificate, ...] = (),
    friendly_name: bytes | None = None,
) -> bytes:
    """A password-protected PKCS#12 file (PBES2/AES-256-CBC, SHA-256 MAC) with the key, leaf and ``cas``."""
    if not password:
        raise UsageError("a PKCS#12 file needs a non-empty password")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name, key, certificate, list(cas) or None, encryption
    )


def load_private_key_pem(data: bytes, passphrase: bytes | None = None, *, label: str = "key") -> PrivateKey:
    """Load a PEM private key; any failure is a one-line ``PKIError`` naming ``label`` ("CA key FILE")."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        if passphrase:
            # A passphrase for an unencrypted key is harmless: load it as it is.
            key = _load_unencrypted(data, label)
        else:
            raise PKIError(f"{label} is encrypted and no passphrase was given") from exc
    except ValueError as exc:
        if passphrase and _looks_encrypted(data):
            raise PKIError(f"wrong passphrase for {label}") from exc
        raise PKIError(f"{label} is not a readable PEM private key") from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm and others for odd inputs.
        raise PKIError(f"{label} is not a readable PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"{label} is a {type(key).__name__}; pgbatten handles only ECDSA and RSA keys")
    return key


def _load_unencrypted(data: bytes, label: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (TypeError, ValueError) as exc:
        raise PKIError(f"{label} is not a readable PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"{label} is a {type(key).__name__}; pgbatten handles only ECDSA and RSA keys")
    return key


def _looks_encrypted(data: bytes) -> bool:
    return b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data


def public_key_matches(key: PrivateKey, certificate: x509.Certificate) -> bool:
    """True if ``certificate`` carries the public half of ``key``."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == certificate.public_key().public_bytes(*spki)
