"""The ClientHello the enumeration sends, built byte by byte, and a parser for it. No I/O.

Python's :mod:`ssl` cannot choose TLS 1.3 suites nor offer TLS 1.0/1.1 against today's OpenSSL, so the
scanner writes its own hello: exactly one version, exactly the suites and groups a plan asks for.
:func:`parse_client_hello` reads one back (fake servers in tests, and whoever decodes a client's first
flight off the wire).
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pgbatten.probe.cipher_suites import SECP256R1, SECP384R1, SECP521R1, SIGNATURE_SCHEMES, X448, X25519
from pgbatten.probe.tlsraw import (
    CT_HANDSHAKE,
    EXT_ALPN,
    EXT_GROUPS,
    EXT_KEY_SHARE,
    EXT_POINT_FORMATS,
    EXT_PSK_MODES,
    EXT_RENEGOTIATION,
    EXT_SIGALGS,
    EXT_SNI,
    EXT_SUPPORTED_VERSIONS,
    HS_CLIENT_HELLO,
    SCSV_RENEGOTIATION,
    Reader,
    TlsDecodeError,
    be16,
)
from pgbatten.probe.versions import TlsVersion

# --------------------------------------------------------------------------------------------- build


def _u8(n: int) -> bytes:
    return struct.pack("!B", n)


def _u16(n: int) -> bytes:
    return struct.pack("!H", n)


def _u24(n: int) -> bytes:
    return struct.pack("!I", n)[1:]


def _vec8(b: bytes) -> bytes:
    return _u8(len(b)) + b


def _vec16(b: bytes) -> bytes:
    return _u16(len(b)) + b


def _ext(kind: int, body: bytes) -> bytes:
    return _u16(kind) + _vec16(body)


def _is_dns_name(name: str) -> bool:
    # RFC 6066 3: literal IP addresses are not permitted in server_name.
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return bool(name) and name.isascii()
    return False


def build_client_hello(
    *,
    version: TlsVersion,
    cipher_suites: Sequence[int],
    groups: Sequence[int],
    server_name: str | None,
    alpn: Sequence[bytes] = (),
    key_shares: Mapping[int, bytes] | None = None,
    session_id: bytes | None = None,
) -> bytes:
    """A complete TLS record carrying one ClientHello that offers exactly ``version``.

    TLS 1.3 is offered the RFC 8446 way (legacy_version 0x0303 plus a supported_versions extension listing
    only 1.3) with ``key_shares`` (group -> public key; empty or None sends an empty key_share list, which
    makes a server that accepts any offered group answer with a HelloRetryRequest naming its choice).
    SSLv3 gets no extensions and signals secure renegotiation with the SCSV; TLS 1.0-1.2 use the
    renegotiation_info extension. TLS_FALLBACK_SCSV is never sent: probing an old version on purpose is
    not a fallback, and the server would answer inappropriate_fallback instead of telling us the truth.
    """
    if not cipher_suites:
        raise ValueError("a ClientHello needs at least one cipher suite")
    tls13 = version >= TlsVersion.TLSv1_3
    ssl3 = version == TlsVersion.SSLv3
    suites = list(cipher_suites)
    if ssl3:
        suites.append(SCSV_RENEGOTIATION)
    sid = os.urandom(32) if session_id is None else session_id
    body = bytearray()
    body += _u16(min(int(version), 0x0303))
    body += os.urandom(32)
    body += _vec8(sid)
    body += _vec16(b"".join(_u16(s) for s in suites))
    body += _vec8(b"\x00")  # null compression only: CRIME
    if not ssl3:
        exts = bytearray()
        if server_name is not None and _is_dns_name(server_name):
            host = server_name.encode("ascii")
            exts += _ext(EXT_SNI, _vec16(b"\x00" + _vec16(host)))
        if groups:
            exts += _ext(EXT_GROUPS, _vec16(b"".join(_u16(g) for g in groups)))
        if not tls13:
            exts += _ext(EXT_POINT_FORMATS, _vec8(b"\x00"))
        if version >= TlsVersion.TLSv1_2:
            # RFC 5246 7.4.1.4.1: a TLS <= 1.1 client must not send signature_algorithms.
            exts += _ext(EXT_SIGALGS, _vec16(b"".join(_u16(s) for s in SIGNATURE_SCHEMES)))
        if alpn:
            exts += _ext(EXT_ALPN, _vec16(b"".join(_vec8(p) for p in alpn)))
        if tls13:
            exts += _ext(EXT_SUPPORTED_VERSIONS, _vec8(_u16(0x0304)))
            exts += _ext(EXT_PSK_MODES, _vec8(b"\x01"))
            shares = b"".join(_u16(g) + _vec16(k) for g, k in (key_shares or {}).items())
            exts += _ext(EXT_KEY_SHARE, _vec16(shares))
        else:
            exts += _ext(EXT_RENEGOTIATION, _vec8(b""))
        body += _vec16(bytes(exts))
    handshake = _u8(HS_CLIENT_HELLO) + _u24(len(body)) + bytes(body)
    # Old servers reject a first record version above 0x0301; 1.0 is what every real client sends.
    record_version = 0x0300 if ssl3 else 0x0301
    return _u8(CT_HANDSHAKE) + _u16(record_version) + _vec16(handshake)


def generate_key_shares(groups: Sequence[int]) -> dict[int, bytes]:
    """Fresh public keys for those of ``groups`` that :mod:`cryptography` can make (X25519/X448/NIST).

    The private halves are dropped: the scanner never finishes a handshake.
    """
    shares: dict[int, bytes] = {}
    for group in groups:
        if group == X25519:
            shares[group] = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
        elif group == X448:
            shares[group] = x448.X448PrivateKey.generate().public_key().public_bytes_raw()
        elif group in _NIST_CURVES:
            key = ec.generate_private_key(_NIST_CURVES[group]()).public_key()
            shares[group] = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return shares


_NIST_CURVES: Mapping[int, type[ec.EllipticCurve]] = MappingProxyType(
    {SECP256R1: ec.SECP256R1, SECP384R1: ec.SECP384R1, SECP521R1: ec.SECP521R1}
)


# --------------------------------------------------------------------------------------------- parse


@dataclass(frozen=True)
class ClientHelloInfo:
    """A parsed ClientHello: what a server (or an observer of the wire) learns from it."""

    legacy_version: int
    record_version: int
    session_id: bytes
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    server_name: str | None
    groups: tuple[int, ...]
    supported_versions: tuple[int, ...]
    key_shares: Mapping[int, bytes]
    alpn: tuple[bytes, ...]
    signature_schemes: tuple[int, ...]

    @property
    def max_version(self) -> int:
        """The highest version offered, honouring supported_versions."""
        return max(self.supported_versions) if self.supported_versions else self.legacy_version


def parse_client_hello(data: bytes) -> ClientHelloInfo:
    """Parse one ClientHello record (ours or any client's). Raises :class:`TlsDecodeError`."""
    if len(data) < 5 or data[0] != CT_HANDSHAKE:
        raise TlsDecodeError("not a handshake record")
    record = Reader(data, "ClientHello record")
    record.take(1, "type")
    record_version = record.u16("record version")
    hs = Reader(record.vec16("record"), "ClientHello")
    if hs.u8("handshake type") != HS_CLIENT_HELLO:
        raise TlsDecodeError("handshake message is not a ClientHello")
    r = Reader(hs.vec24("ClientHello"), "ClientHello")
    legacy_version = r.u16("version")
    r.take(32, "random")
    session_id = r.vec8("session id")
    raw_suites = r.vec16("cipher suites")
    suites = tuple(be16(raw_suites, i) for i in range(0, len(raw_suites) - 1, 2))
    r.vec8("compression methods")
    exts = r.extensions()

    def u16_list(raw: bytes) -> tuple[int, ...]:
        return tuple(be16(raw, i) for i in range(0, len(raw) - 1, 2))

    server_name = None
    if EXT_SNI in exts:
        sni = Reader(Reader(exts[EXT_SNI], "SNI").vec16("names"), "SNI")
        sni.u8("name type")
        server_name = sni.vec16("host name").decode("ascii", "replace")
    shares: dict[int, bytes] = {}
    if EXT_KEY_SHARE in exts:
        ks = Reader(Reader(exts[EXT_KEY_SHARE], "key_share").vec16("shares"), "key_share")
        while ks.left:
            group = ks.u16("group")
            shares[group] = ks.vec16("key")
    alpn: list[bytes] = []
    if EXT_ALPN in exts:
        names = Reader(Reader(exts[EXT_ALPN], "ALPN").vec16("list"), "ALPN")
        while names.left:
            alpn.append(names.vec8("protocol"))
    return ClientHelloInfo(
        legacy_version=legacy_version,
        record_version=record_version,
        session_id=session_id,
        cipher_suites=suites,
        extensions=tuple(exts),
        server_name=server_name,
        groups=u16_list(Reader(exts[EXT_GROUPS], "groups").vec16("list")) if EXT_GROUPS in exts else (),
        supported_versions=(
            u16_list(Reader(exts[EXT_SUPPORTED_VERSIONS], "versions").vec8("list"))
            if EXT_SUPPORTED_VERSIONS in exts
            else ()
        ),
        key_shares=MappingProxyType(shares),
        alpn=tuple(alpn),
        signature_schemes=(
            u16_list(Reader(exts[EXT_SIGALGS], "sigalgs").vec16("list")) if EXT_SIGALGS in exts else ()
        ),
    )
