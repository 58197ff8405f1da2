"""Certificate signing requests for servers whose private key never leaves them. Pure.

A fleet keeps its CA (and the CA's key) on one control node. Each server makes its own key, keeps it, and
sends only a CSR: its public key and the names it wants to be known by. The control node checks what the
request asks for before signing — every name a DNS name or IP address (no wildcard, no e-mail or URI), each
one allowed for that server, a key type the CA issues, and no CA bit — and then certifies the key with
its own server profile: nothing but the names and the key is taken from the request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from pgbatten.errors import PKIError, UsageError
from pgbatten.pki.keys import KeyType, PrivateKey
from pgbatten.pki.names import HostName, classify_host, subject_alt_names

__all__ = [
    "CsrPolicy",
    "ServerRequest",
    "allowed_key_types",
    "check_server_csr",
    "csr_pem",
    "host_allowed",
    "load_csr",
    "make_server_csr",
    "public_key_type",
]

MAX_COMMON_NAME = 64
_RSA_TYPES = {2048: KeyType.RSA_2048, 3072: KeyType.RSA_3072, 4096: KeyType.RSA_4096}


def public_key_type(public_key: CertificatePublicKeyTypes) -> KeyType:
    """The ``KeyType`` of a public key; ``PKIError`` naming it when pgbatten does not issue that kind."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return KeyType.ECDSA_P256
        raise PKIError(f"the key is ECDSA on {public_key.curve.name}; pgbatten issues ECDSA P-256 only")
    if isinstance(public_key, rsa.RSAPublicKey):
        kind = _RSA_TYPES.get(public_key.key_size)
        if kind is None:
            raise PKIError(f"the key is RSA-{public_key.key_size}; pgbatten issues RSA 2048, 3072 or 4096")
        return kind
    raise PKIError(f"the key is {type(public_key).__name__}; pgbatten issues ECDSA P-256 and RSA keys only")


def make_server_csr(key: PrivateKey, hosts: Sequence[str]) -> x509.CertificateSigningRequest:
    """A CSR for ``key`` naming every host in subjectAltName (CN: the first DNS name, when it fits)."""
    if isinstance(hosts, str):
        raise TypeError("hosts must be a sequence of host names, not one string")
    san = subject_alt_names(hosts)
    names = [n for n in san if isinstance(n, x509.DNSName)]
    subject: list[x509.NameAttribute[str]] = []
    if names and len(names[0].value) <= MAX_COMMON_NAME:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, names[0].value))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    builder = builder.add_extension(san, critical=not subject)
    return builder.sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes, *, label: str = "the CSR") -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER; ``PKIError`` naming ``label`` when it is neither."""
    loader = x509.load_pem_x509_csr if b"-----BEGIN" in data else x509.load_der_x509_csr
    try:
        return loader(data)
    except ValueError as exc:
        raise PKIError(f"{label} is not a readable certificate signing request (PEM or DER): {exc}") from exc


@dataclass(frozen=True)
class CsrPolicy:
    """What the signer accepts. ``allowed_hosts`` empty: any name or address (each still checked)."""

    allowed_hosts: tuple[str, ...] = ()
    """Names (``db1.example.com``), ``*.example.com`` (exactly one label more), addresses, networks
    (``10.0.0.0/24``): every name the request asks for must match one."""
    key_types: frozenset[KeyType] = frozenset(KeyType)

    def __post_init__(self) -> None:
        for pattern in self.allowed_hosts:
            _parse_pattern(pattern)
        if not self.key_types:
            raise UsageError("at least one key type must be allowed")


@dataclass(frozen=True)
class ServerRequest:
    """A CSR that passed the policy: the key to certify and the names to certify it for."""

    csr: x509.CertificateSigningRequest
    hosts: tuple[str, ...]
    key_type: KeyType

    @property
    def public_key(self) -> CertificatePublicKeyTypes:
        return self.csr.public_key()


Pattern = HostName | ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_pattern(text: str) -> Pattern:
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise UsageError(f"invalid allowed network {text!r}: {exc}") from None
    return classify_host(text, allow_wildcard=True)


def host_allowed(host: HostName, patterns: Sequence[str]) -> bool:
    """Whether ``host`` (a classified SAN) matches one of ``patterns`` (see ``CsrPolicy.allowed_hosts``)."""
    for text in patterns:
        pattern = _parse_pattern(text)
        if isinstance(pattern, ipaddress.IPv4Network | ipaddress.IPv6Network):
            if not isinstance(host, str) and host.version == pattern.version and host in pattern:
                return True
        elif isinstance(pattern, str) and isinstance(host, str):
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif pattern == host:
                return True
        elif pattern == host:
            return True
    return False


def check_server_csr(csr: x509.CertificateSigningRequest, policy: CsrPolicy) -> ServerRequest:
    """Check everything ``csr`` asks for against ``policy``; ``PKIError`` with the first thing refused."""
    if not csr.is_signature_valid:
        raise PKIError("the CSR's signature does not verify: it was altered, or not made with its own key")
    key_type = public_key_type(csr.public_key())
    if key_type not in policy.key_types:
        allowed = ", ".join(sorted(k.value for k in policy.key_types))
        raise PKIError(f"the CSR's key is {key_type.value}; allowed here: {allowed}")
    try:
        constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        pass
    except ValueError as exc:
        raise PKIError(f"the CSR's extensions cannot be read: {exc}") from exc
    else:
        if constraints.ca:
            raise PKIError("the CSR asks to be a CA (basicConstraints CA:TRUE); a server gets a leaf only")
    try:
        usage = csr.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if usage.key_cert_sign or usage.crl_sign:
            raise PKIError("the CSR asks for keyCertSign or cRLSign: that is a CA's key usage")
    hosts = _requested_hosts(csr)
    if policy.allowed_hosts:
        refused = [h for h in hosts if not host_allowed(classify_host(h), policy.allowed_hosts)]
        if refused:
            raise PKIError(
                f"the CSR asks for {', '.join(refused)}, not allowed for this server"
                f" (allowed: {', '.join(policy.allowed_hosts)})"
            )
    return ServerRequest(csr=csr, hosts=hosts, key_type=key_type)


def _requested_hosts(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PKIError(
            "the CSR names no host (no subjectAltName); verify-full checks the SANs, so it must list them"
        ) from None
    hosts: list[str] = []
    for general in san:
        if isinstance(general, x509.DNSName):
            try:
                value = classify_host(general.value)
            except UsageError as exc:
                raise PKIError(f"the CSR asks for a bad DNS name: {exc}") from None
        elif isinstance(general, x509.IPAddress):
            if not isinstance(general.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise PKIError(f"the CSR asks for an address range {general.value}, not an address")
            value = general.value
        else:
            raise PKIError(f"the CSR asks for {general!r}; a server certificate names DNS names and IPs only")
        if str(value) not in hosts:
            hosts.append(str(value))
    if not hosts:
        raise PKIError("the CSR's subjectAltName is empty")
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        # Clients that still read the CN (libpq before 10, some drivers) must not learn a name the SANs lack.
        common_name = str(attribute.value)
        try:
            in_sans = str(classify_host(common_name)) in hosts
        except UsageError:
            in_sans = False
        if not in_sans:
            raise PKIError(f"the CSR's CN {common_name!r} is not one of the names it asks for")
    return tuple(hosts)


def allowed_key_types(names: Collection[str]) -> frozenset[KeyType]:
    """``--key-type`` values as a set; every type pgbatten issues when none is given."""
    return frozenset(KeyType.parse(n) for n in names) if names else frozenset(KeyType)
