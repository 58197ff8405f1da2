"""Judge an ``ssl_ciphers`` string without running anything on the server.

The OpenSSL cipher-string language (groups, ``+``/``-``/``!`` operators, ``@STRENGTH``, ``@SECLEVEL``) is
too rich to evaluate by hand reliably, so the string is expanded by the local OpenSSL library through the
``ssl`` module. The server's OpenSSL may differ a little in version and configuration; the verdict says
which library judged it. TLS 1.3 suites are left out: ``ssl_ciphers`` does not govern them, and they are all
forward-secret AEAD suites.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# PostgreSQL never configures a PSK or SRP identity, so suites needing one can never be negotiated and say
# nothing about what clients get.
_UNUSABLE_KEX = frozenset({"kx-psk", "kx-dhe-psk", "kx-ecdhe-psk", "kx-rsa-psk", "kx-srp"})
_FORWARD_SECRET_KEX = frozenset({"kx-ecdhe", "kx-dhe", "kx-any"})
_BROKEN_MARKERS = ("NULL", "RC4", "DES-CBC-", "EXP", "ADH", "AECDH", "MD5")


@dataclass(frozen=True)
class CipherSuite:
    """One TLS <= 1.2 suite a cipher string enables, as OpenSSL describes it."""

    name: str
    kex: str
    auth: str
    aead: bool
    symmetric: str | None

    @property
    def forward_secret(self) -> bool:
        return self.kex in _FORWARD_SECRET_KEX

    @property
    def broken(self) -> bool:
        """No encryption, no authentication, or a cipher broken in practice (RC4, DES, 3DES, export)."""
        if self.auth == "auth-null" or self.symmetric in (None, "", "null"):
            return True
        sym = self.symmetric or ""
        return any(m in self.name for m in _BROKEN_MARKERS) or "des" in sym or "rc4" in sym


@dataclass(frozen=True)
class CipherVerdict:
    """What a cipher string allows for TLS 1.2 and older."""

    cipher_string: str
    judged_by: str
    suites: tuple[CipherSuite, ...]
    error: str | None = None

    @property
    def not_forward_secret(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.suites if not s.forward_secret)

    @property
    def not_aead(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.suites if not s.aead)

    @property
    def broken(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.suites if s.broken)

    @property
    def weak(self) -> tuple[str, ...]:
        """Suites that are not forward-secret AEAD, in the string's order."""
        return tuple(s.name for s in self.suites if not (s.forward_secret and s.aead))


Expander = Callable[[str], Sequence[CipherSuite]]


def openssl_expand(cipher_string: str) -> list[CipherSuite]:
    """Expand ``cipher_string`` with the local OpenSSL; raises ``ssl.SSLError`` when it selects nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(cipher_string)
    out: list[CipherSuite] = []
    for c in ctx.get_ciphers():
        if c.get("protocol") == "TLSv1.3":
            continue
        kex = str(c.get("kea") or "")
        if kex in _UNUSABLE_KEX:
            continue
        out.append(
            CipherSuite(
                name=str(c["name"]),
                kex=kex,
                auth=str(c.get("auth") or ""),
                aead=bool(c.get("aead")),
                symmetric=c.get("symmetric"),
            )
        )
    return out


def judge_ciphers(cipher_string: str, expand: Expander | None = None) -> CipherVerdict:
    """Expand and classify ``cipher_string``; ``expand`` replaces the local OpenSSL (tests)."""
    judged_by = "injected expander" if expand is not None else ssl.OPENSSL_VERSION
    try:
        suites = tuple((expand or openssl_expand)(cipher_string))
    except (ssl.SSLError, ValueError) as exc:
        return CipherVerdict(cipher_string, judged_by, (), error=str(exc) or type(exc).__name__)
    return CipherVerdict(cipher_string, judged_by, suites)
