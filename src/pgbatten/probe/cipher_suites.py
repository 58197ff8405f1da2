"""IANA tables for the TLS scanner: cipher suites, named groups and signature schemes.

The cipher-suite table covers every suite OpenSSL 3 can negotiate (``openssl ciphers -V -stdname
'ALL:COMPLEMENTOFALL:@SECLEVEL=0'`` without PSK/SRP) plus the legacy suites a scanner must still detect on
old or misconfigured servers (EXPORT, RC4, DES/3DES, static DH/ECDH, SEED, IDEA, anonymous). PSK, SRP,
KRB5 and GOST suites are left out: a PostgreSQL server can never select them without out-of-band keys.

Properties are derived from the IANA name so that the table stays a plain list of registry entries that
can be checked against the registry by eye.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Rating(StrEnum):
    """How a finding should judge a suite; ordered from best to worst by :data:`RATING_ORDER`."""

    RECOMMENDED = "recommended"
    SECURE = "secure"
    WEAK = "weak"
    INSECURE = "insecure"


RATING_ORDER: Mapping[Rating, int] = MappingProxyType(
    {Rating.RECOMMENDED: 0, Rating.SECURE: 1, Rating.WEAK: 2, Rating.INSECURE: 3}
)


@dataclass(frozen=True)
class CipherSuite:
    """One IANA cipher suite and what a reviewer needs to know about it."""

    code: int
    name: str
    tls13: bool
    """True for the TLS 1.3 suites (0x1301-0x1305), which name no key exchange and work only in TLS 1.3."""
    kex: str
    """``RSA``, ``DHE``, ``ECDHE``, ``DH``, ``ECDH`` (static) or ``any`` (TLS 1.3)."""
    auth: str
    """``RSA``, ``DSS``, ``ECDSA``, ``anon`` or ``any`` (TLS 1.3)."""
    cipher: str
    mac: str | None
    bits: int
    is_aead: bool
    forward_secret: bool
    export: bool
    min_version: int
    """Lowest protocol version (wire value) that may carry the suite: AEAD and SHA-2 MACs need TLS 1.2."""
    max_version: int
    """Highest protocol version (wire value) a scanner offers it at: every legacy suite up to TLS 1.2.

    EXPORT suites were forbidden from TLS 1.1 on, but a broken server that still accepts them is exactly
    what a scanner must find, so they are offered at every legacy version."""
    rating: Rating

    @property
    def hex(self) -> str:
        """The code point as ``0xC02B``."""
        return f"0x{self.code:04X}"


_SSL3, _TLS12, _TLS13 = 0x0300, 0x0303, 0x0304

# (code point, IANA name). Order is irrelevant; see OFFER_ORDER for the order put on the wire.
_REGISTRY: tuple[tuple[int, str], ...] = (
    (0x0001, "TLS_RSA_WITH_NULL_MD5"),
    (0x0002, "TLS_RSA_WITH_NULL_SHA"),
    (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5"),
    (0x0004, "TLS_RSA_WITH_RC4_128_MD5"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0x0006, "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5"),
    (0x0007, "TLS_RSA_WITH_IDEA_CBC_SHA"),
    (0x0008, "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0009, "TLS_RSA_WITH_DES_CBC_SHA"),
    (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x000B, "TLS_DH_DSS_EXPORT_WITH_DES40_CBC_SHA"),
    (0x000C, "TLS_DH_DSS_WITH_DES_CBC_SHA"),
    (0x000D, "TLS_DH_DSS_WITH_3DES_EDE_CBC_SHA"),
    (0x000E, "TLS_DH_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x000F, "TLS_DH_RSA_WITH_DES_CBC_SHA"),
    (0x0010, "TLS_DH_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0011, "TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0012, "TLS_DHE_DSS_WITH_DES_CBC_SHA"),
    (0x0013, "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA"),
    (0x0014, "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0015, "TLS_DHE_RSA_WITH_DES_CBC_SHA"),
    (0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0017, "TLS_DH_anon_EXPORT_WITH_RC4_40_MD5"),
    (0x0018, "TLS_DH_anon_WITH_RC4_128_MD5"),
    (0x0019, "TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA"),
    (0x001A, "TLS_DH_anon_WITH_DES_CBC_SHA"),
    (0x001B, "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA"),
    (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0030, "TLS_DH_DSS_WITH_AES_128_CBC_SHA"),
    (0x0031, "TLS_DH_RSA_WITH_AES_128_CBC_SHA"),
    (0x0032, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x0036, "TLS_DH_DSS_WITH_AES_256_CBC_SHA"),
    (0x0037, "TLS_DH_RSA_WITH_AES_256_CBC_SHA"),
    (0x0038, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x003A, "TLS_DH_anon_WITH_AES_256_CBC_SHA"),
    (0x003B, "TLS_RSA_WITH_NULL_SHA256"),
    (0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0x003E, "TLS_DH_DSS_WITH_AES_128_CBC_SHA256"),
    (0x003F, "TLS_DH_RSA_WITH_AES_128_CBC_SHA256"),
    (0x0040, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256"),
    (0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0042, "TLS_DH_DSS_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0043, "TLS_DH_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0044, "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0045, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0046, "TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA"),
    # 0x0062-0x0066: the never-registered EXPORT1024 draft suites that old OpenSSL shipped.
    (0x0062, "TLS_RSA_EXPORT1024_WITH_DES_CBC_SHA"),
    (0x0063, "TLS_DHE_DSS_EXPORT1024_WITH_DES_CBC_SHA"),
    (0x0064, "TLS_RSA_EXPORT1024_WITH_RC4_56_SHA"),
    (0x0065, "TLS_DHE_DSS_EXPORT1024_WITH_RC4_56_SHA"),
    (0x0066, "TLS_DHE_DSS_WITH_RC4_128_SHA"),
    (0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0x0068, "TLS_DH_DSS_WITH_AES_256_CBC_SHA256"),
    (0x0069, "TLS_DH_RSA_WITH_AES_256_CBC_SHA256"),
    (0x006A, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256"),
    (0x006B, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"),
    (0x006C, "TLS_DH_anon_WITH_AES_128_CBC_SHA256"),
    (0x006D, "TLS_DH_anon_WITH_AES_256_CBC_SHA256"),
    (0x0084, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0085, "TLS_DH_DSS_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0086, "TLS_DH_RSA_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0087, "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0088, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0089, "TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0096, "TLS_RSA_WITH_SEED_CBC_SHA"),
    (0x0097, "TLS_DH_DSS_WITH_SEED_CBC_SHA"),
    (0x0098, "TLS_DH_RSA_WITH_SEED_CBC_SHA"),
    (0x0099, "TLS_DHE_DSS_WITH_SEED_CBC_SHA"),
    (0x009A, "TLS_DHE_RSA_WITH_SEED_CBC_SHA"),
    (0x009B, "TLS_DH_anon_WITH_SEED_CBC_SHA"),
    (0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009F, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0x00A0, "TLS_DH_RSA_WITH_AES_128_GCM_SHA256"),
    (0x00A1, "TLS_DH_RSA_WITH_AES_256_GCM_SHA384"),
    (0x00A2, "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256"),
    (0x00A3, "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384"),
    (0x00A4, "TLS_DH_DSS_WITH_AES_128_GCM_SHA256"),
    (0x00A5, "TLS_DH_DSS_WITH_AES_256_GCM_SHA384"),
    (0x00A6, "TLS_DH_anon_WITH_AES_128_GCM_SHA256"),
    (0x00A7, "TLS_DH_anon_WITH_AES_256_GCM_SHA384"),
    (0x00BA, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0x00BB, "TLS_DH_DSS_WITH_CAMELLIA_128_CBC_SHA256"),
    (0x00BC, "TLS_DH_RSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0x00BD, "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA256"),
    (0x00BE, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0x00BF, "TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA256"),
    (0x00C0, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256"),
    (0x00C1, "TLS_DH_DSS_WITH_CAMELLIA_256_CBC_SHA256"),
    (0x00C2, "TLS_DH_RSA_WITH_CAMELLIA_256_CBC_SHA256"),
    (0x00C3, "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA256"),
    (0x00C4, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256"),
    (0x00C5, "TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA256"),
    (0x1301, "TLS_AES_128_GCM_SHA256"),
    (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
    (0x1304, "TLS_AES_128_CCM_SHA256"),
    (0x1305, "TLS_AES_128_CCM_8_SHA256"),
    (0xC001, "TLS_ECDH_ECDSA_WITH_NULL_SHA"),
    (0xC002, "TLS_ECDH_ECDSA_WITH_RC4_128_SHA"),
    (0xC003, "TLS_ECDH_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC004, "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xC005, "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xC006, "TLS_ECDHE_ECDSA_WITH_NULL_SHA"),
    (0xC007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0xC008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xC00B, "TLS_ECDH_RSA_WITH_NULL_SHA"),
    (0xC00C, "TLS_ECDH_RSA_WITH_RC4_128_SHA"),
    (0xC00D, "TLS_ECDH_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC00E, "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA"),
    (0xC00F, "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA"),
    (0xC010, "TLS_ECDHE_RSA_WITH_NULL_SHA"),
    (0xC011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0xC012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xC015, "TLS_ECDH_anon_WITH_NULL_SHA"),
    (0xC016, "TLS_ECDH_anon_WITH_RC4_128_SHA"),
    (0xC017, "TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA"),
    (0xC018, "TLS_ECDH_anon_WITH_AES_128_CBC_SHA"),
    (0xC019, "TLS_ECDH_anon_WITH_AES_256_CBC_SHA"),
    (0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xC025, "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xC026, "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xC029, "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256"),
    (0xC02A, "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384"),
    (0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xC02D, "TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xC02E, "TLS_ECDH_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xC031, "TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256"),
    (0xC032, "TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384"),
    (0xC03C, "TLS_RSA_WITH_ARIA_128_CBC_SHA256"),
    (0xC03D, "TLS_RSA_WITH_ARIA_256_CBC_SHA384"),
    (0xC044, "TLS_DHE_RSA_WITH_ARIA_128_CBC_SHA256"),
    (0xC045, "TLS_DHE_RSA_WITH_ARIA_256_CBC_SHA384"),
    (0xC048, "TLS_ECDHE_ECDSA_WITH_ARIA_128_CBC_SHA256"),
    (0xC049, "TLS_ECDHE_ECDSA_WITH_ARIA_256_CBC_SHA384"),
    (0xC04C, "TLS_ECDHE_RSA_WITH_ARIA_128_CBC_SHA256"),
    (0xC04D, "TLS_ECDHE_RSA_WITH_ARIA_256_CBC_SHA384"),
    (0xC050, "TLS_RSA_WITH_ARIA_128_GCM_SHA256"),
    (0xC051, "TLS_RSA_WITH_ARIA_256_GCM_SHA384"),
    (0xC052, "TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256"),
    (0xC053, "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384"),
    (0xC056, "TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256"),
    (0xC057, "TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384"),
    (0xC05A, "TLS_DH_anon_WITH_ARIA_128_GCM_SHA256"),
    (0xC05B, "TLS_DH_anon_WITH_ARIA_256_GCM_SHA384"),
    (0xC05C, "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256"),
    (0xC05D, "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384"),
    (0xC060, "TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256"),
    (0xC061, "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384"),
    (0xC072, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xC073, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xC076, "TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256"),
    (0xC077, "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384"),
    (0xC07A, "TLS_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xC07B, "TLS_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xC07C, "TLS_DHE_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xC07D, "TLS_DHE_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xC086, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xC087, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xC08A, "TLS_ECDHE_RSA_WITH_CAMELLIA_128_GCM_SHA256"),
    (0xC08B, "TLS_ECDHE_RSA_WITH_CAMELLIA_256_GCM_SHA384"),
    (0xC09C, "TLS_RSA_WITH_AES_128_CCM"),
    (0xC09D, "TLS_RSA_WITH_AES_256_CCM"),
    (0xC09E, "TLS_DHE_RSA_WITH_AES_128_CCM"),
    (0xC09F, "TLS_DHE_RSA_WITH_AES_256_CCM"),
    (0xC0A0, "TLS_RSA_WITH_AES_128_CCM_8"),
    (0xC0A1, "TLS_RSA_WITH_AES_256_CCM_8"),
    (0xC0A2, "TLS_DHE_RSA_WITH_AES_128_CCM_8"),
    (0xC0A3, "TLS_DHE_RSA_WITH_AES_256_CCM_8"),
    (0xC0AC, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"),
    (0xC0AD, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM"),
    (0xC0AE, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"),
    (0xC0AF, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8"),
    (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xCCAA, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
)

_LEGACY_NAME = re.compile(r"^TLS_(?P<kx>.+?)_WITH_(?P<enc>.+?)(?:_(?P<mac>SHA|SHA256|SHA384|MD5))?$")
_TLS13_NAME = re.compile(r"^TLS_(?P<enc>.+)_(?P<mac>SHA256|SHA384)$")
_BROKEN_CIPHERS = ("NULL", "RC4", "RC2", "DES40", "DES_CBC", "IDEA")
_MODERN_CIPHERS = ("AES_128_GCM", "AES_256_GCM", "CHACHA20_POLY1305", "AES_128_CCM", "AES_256_CCM")


def _bits(enc: str, export: bool) -> int:
    if enc == "NULL":
        return 0
    if export and "_40" in enc:
        return 40
    if enc in ("DES_CBC", "DES40_CBC") or "RC4_56" in enc:
        return 40 if "40" in enc else 56
    if enc.startswith("3DES"):
        return 112  # three 56-bit keys, but meet-in-the-middle leaves 112 bits of strength
    if enc.startswith(("CHACHA20", "SEED", "IDEA")):
        return 256 if enc.startswith("CHACHA20") else 128
    numbers = re.findall(r"\d+", enc)
    return int(numbers[0]) if numbers else 0


def _rate(enc: str, mac: str | None, aead: bool, fs: bool, export: bool, anon: bool) -> Rating:
    if export or anon or mac == "MD5" or any(broken in enc for broken in _BROKEN_CIPHERS):
        return Rating.INSECURE
    if not (aead and fs):
        # CBC (padding oracles, Lucky13), 3DES (Sweet32) and RSA key transport (no forward secrecy).
        return Rating.WEAK
    if enc.endswith("CCM_8") or not enc.startswith(_MODERN_CIPHERS):
        # Truncated 8-byte tags, or ARIA/CAMELLIA: sound, but outside mainstream guidance.
        return Rating.SECURE
    return Rating.RECOMMENDED


def _describe(code: int, name: str) -> CipherSuite:
    if 0x1301 <= code <= 0x1305:
        m13 = _TLS13_NAME.match(name)
        assert m13 is not None, name
        enc = m13["enc"]
        return CipherSuite(
            code=code,
            name=name,
            tls13=True,
            kex="any",
            auth="any",
            cipher=enc,
            mac=None,
            bits=_bits(enc, False),
            is_aead=True,
            forward_secret=True,
            export=False,
            min_version=_TLS13,
            max_version=_TLS13,
            rating=Rating.SECURE if enc.endswith("CCM_8") else Rating.RECOMMENDED,
        )
    m = _LEGACY_NAME.match(name)
    assert m is not None, name
    kx_parts = m["kx"].split("_")
    export = any(part.startswith("EXPORT") for part in kx_parts)
    kx_parts = [p for p in kx_parts if not p.startswith("EXPORT")]
    anon = "anon" in kx_parts
    if anon:
        # DH_anon/ECDH_anon are ephemeral but unauthenticated: keys are fresh, the peer is anyone.
        kex, auth = ("ECDHE" if kx_parts[0] == "ECDH" else "DHE"), "anon"
    elif len(kx_parts) == 1:
        kex, auth = kx_parts[0], "RSA"
    else:
        kex, auth = kx_parts[0], kx_parts[1]
    enc = m["enc"]
    mac = m["mac"]
    aead = any(mode in enc for mode in ("GCM", "CCM", "POLY1305"))
    fs = kex in ("DHE", "ECDHE")
    tls12_only = aead or mac in ("SHA256", "SHA384")
    return CipherSuite(
        code=code,
        name=name,
        tls13=False,
        kex=kex,
        auth=auth,
        cipher=enc,
        mac=None if aead else mac,
        bits=_bits(enc, export),
        is_aead=aead,
        forward_secret=fs,
        export=export,
        min_version=_TLS12 if tls12_only else _SSL3,
        max_version=_TLS12,
        rating=_rate(enc, mac, aead, fs, export, anon),
    )


CIPHER_SUITES: Mapping[int, CipherSuite] = MappingProxyType(
    {code: _describe(code, name) for code, name in sorted(_REGISTRY)}
)
"""Every known suite by code point."""

BY_NAME: Mapping[str, CipherSuite] = MappingProxyType({s.name: s for s in CIPHER_SUITES.values()})

TLS13_SUITES: tuple[int, ...] = tuple(c for c, s in CIPHER_SUITES.items() if s.tls13)


def suite_name(code: int) -> str:
    """The IANA name of ``code``, or ``UNKNOWN_0xNNNN`` for a code point outside the table."""
    suite = CIPHER_SUITES.get(code)
    return suite.name if suite is not None else f"UNKNOWN_0x{code:04X}"


def candidates_for(version: int) -> tuple[int, ...]:
    """Suites that may be negotiated at protocol ``version`` (wire value), weakest first.

    Weakest first is deliberate: servers that enforce their own order almost always rank strong suites
    first, so their very first choice differs from the first acceptable suite in our offer, which proves
    server preference without an extra connection.
    """
    pool = [s for s in CIPHER_SUITES.values() if s.min_version <= version <= s.max_version]
    pool.sort(key=lambda s: (-RATING_ORDER[s.rating], s.bits, s.code))
    return tuple(s.code for s in pool)


# --------------------------------------------------------------------------------------------- groups


NAMED_GROUPS: Mapping[int, str] = MappingProxyType(
    {
        1: "sect163k1",
        2: "sect163r1",
        3: "sect163r2",
        4: "sect193r1",
        5: "sect193r2",
        6: "sect233k1",
        7: "sect233r1",
        8: "sect239k1",
        9: "sect283k1",
        10: "sect283r1",
        11: "sect409k1",
        12: "sect409r1",
        13: "sect571k1",
        14: "sect571r1",
        15: "secp160k1",
        16: "secp160r1",
        17: "secp160r2",
        18: "secp192k1",
        19: "secp192r1",
        20: "secp224k1",
        21: "secp224r1",
        22: "secp256k1",
        23: "secp256r1",
        24: "secp384r1",
        25: "secp521r1",
        26: "brainpoolP256r1",
        27: "brainpoolP384r1",
        28: "brainpoolP512r1",
        29: "x25519",
        30: "x448",
        31: "brainpoolP256r1tls13",
        32: "brainpoolP384r1tls13",
        33: "brainpoolP512r1tls13",
        256: "ffdhe2048",
        257: "ffdhe3072",
        258: "ffdhe4096",
        259: "ffdhe6144",
        260: "ffdhe8192",
        0x11EB: "SecP256r1MLKEM768",
        0x11EC: "X25519MLKEM768",
        0x11ED: "SecP384r1MLKEM1024",
    }
)
"""IANA TLS Supported Groups that a scanner offers; the hybrid ML-KEM groups appear in OpenSSL 3.5+."""

GROUP_BY_NAME: Mapping[str, int] = MappingProxyType({v: k for k, v in NAMED_GROUPS.items()})

X25519, X448, SECP256R1, SECP384R1, SECP521R1 = 29, 30, 23, 24, 25
EC_GROUPS: tuple[int, ...] = tuple(g for g in NAMED_GROUPS if g < 256)
"""Groups usable for ECDHE in TLS 1.0-1.2 (RFC 8422); TLS 1.2 DHE never negotiates via supported_groups."""


def group_name(code: int) -> str:
    """The IANA name of a named group, or ``group_0xNNNN``."""
    return NAMED_GROUPS.get(code, f"group_0x{code:04X}")


# --------------------------------------------------------------------------------------------- signatures


SIGNATURE_SCHEMES: Mapping[int, str] = MappingProxyType(
    {
        0x0403: "ecdsa_secp256r1_sha256",
        0x0503: "ecdsa_secp384r1_sha384",
        0x0603: "ecdsa_secp521r1_sha512",
        0x0807: "ed25519",
        0x0808: "ed448",
        0x0804: "rsa_pss_rsae_sha256",
        0x0805: "rsa_pss_rsae_sha384",
        0x0806: "rsa_pss_rsae_sha512",
        0x0809: "rsa_pss_pss_sha256",
        0x080A: "rsa_pss_pss_sha384",
        0x080B: "rsa_pss_pss_sha512",
        0x081A: "ecdsa_brainpoolP256r1tls13_sha256",
        0x081B: "ecdsa_brainpoolP384r1tls13_sha384",
        0x081C: "ecdsa_brainpoolP512r1tls13_sha512",
        0x0401: "rsa_pkcs1_sha256",
        0x0501: "rsa_pkcs1_sha384",
        0x0601: "rsa_pkcs1_sha512",
        0x0303: "ecdsa_sha224",
        0x0301: "rsa_pkcs1_sha224",
        0x0402: "dsa_sha256",
        0x0502: "dsa_sha384",
        0x0602: "dsa_sha512",
        0x0302: "dsa_sha224",
        0x0203: "ecdsa_sha1",
        0x0201: "rsa_pkcs1_sha1",
        0x0202: "dsa_sha1",
    }
)
"""Signature schemes we offer, strongest first, so any certificate a server holds stays usable."""
