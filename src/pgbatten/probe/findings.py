"""The finding catalogue of ``pgbatten check``: what each observation means, how bad it is, how to fix it.

Pure functions from observations (the SSLRequest answer and handshakes, the plaintext probes, an
enumeration) to :class:`Finding` lists; no I/O. The certificate's findings are in
:mod:`probe.cert_findings`. :data:`FINDING_SEVERITIES` lists every id either module emits; the README's
finding table is generated from it (with :mod:`probe.grading`).
``fix`` is the exact pgbatten command where there is one (:data:`~pgbatten.findings.PGDATA_PLACEHOLDER`
stands for the cluster's data directory until ``check`` knows it, see :mod:`probe.fixes`). ``cis`` cites
the CIS PostgreSQL Benchmark recommendation that covers the finding; only sections checked against the
published benchmarks are cited, otherwise it stays None.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from pgbatten.findings import Finding, Severity, secure_fix
from pgbatten.probe import wire
from pgbatten.probe.cipher_suites import BY_NAME, GROUP_BY_NAME, CipherSuite, Rating
from pgbatten.probe.enumerate import TlsEnumeration
from pgbatten.probe.plaintext import PlaintextResult
from pgbatten.probe.tls import BufferedVerdict, TlsScan, VersionStatus
from pgbatten.probe.versions import TlsVersion

FINDING_SEVERITIES: Mapping[str, tuple[Severity, ...]] = {
    # the SSLRequest answer, the handshakes and the plaintext probes
    "plaintext-accepted": ("critical",),
    "tls-not-supported": ("critical",),
    "tls-handshake-failed": ("critical",),
    "bytes-after-ssl-response": ("high",),
    "buffered-plaintext-processed": ("high",),
    "not-postgresql": ("high",),
    "tls-handshake-incomplete": ("high",),
    "plaintext-undetermined": ("low",),
    "tls-scan-incomplete": ("low",),
    "enumeration-incomplete": ("low",),
    "audit-deadline": ("low",),
    "version-not-testable": ("info",),
    "direct-ssl-supported": ("info",),
    # protocols, suites and groups
    "ssl3-accepted": ("critical",),
    "tls10-accepted": ("high",),
    "tls11-accepted": ("medium",),
    "tls13-not-supported": ("low",),
    "cipher-insecure": ("high",),
    "cipher-no-forward-secrecy": ("medium",),
    "cipher-non-aead": ("medium",),
    "weak-groups": ("medium",),
    "weak-dh": ("high", "medium"),
    "server-preference-not-enforced": ("info",),
    # the certificate (probe.cert_findings)
    "cert-expired": ("high",),
    "cert-not-yet-valid": ("high",),
    "hostname-mismatch": ("high",),
    "untrusted-issuer": ("high",),
    "cert-revoked": ("high",),
    "ip-san-needs-libpq-15": ("low",),
    "weak-key": ("high",),
    "weak-signature": ("high",),
    "chain-incomplete": ("medium",),
    "chain-misordered": ("medium",),
    "cert-expires-soon": ("medium",),
    "cert-self-signed": ("low",),
    "crl-not-loaded": ("low",),
    # the server-side audit (check --dsn) when it cannot run
    "server-audit-failed": ("high",),
    "server-audit-incomplete": ("low",),
}
"""Every finding id of the outside check, with the severities it can have."""

# CIS PostgreSQL Benchmark sections (numbering as in the 13-18 benchmarks; 6.9's title changed in 17).
CIS_TLS = "CIS PostgreSQL 16 Benchmark 6.8: Ensure TLS is enabled and configured correctly"
CIS_OLD_TLS = "CIS PostgreSQL 14 Benchmark 6.9: Ensure the TLSv1.0 and TLSv1.1 Protocols are Disabled"
CIS_TLS13 = "CIS PostgreSQL 17 Benchmark 6.9: Ensure that TLSv1.3, or later, is configured"
CIS_CIPHERS = "CIS PostgreSQL 14 Benchmark 6.10: Ensure Weak SSL/TLS Ciphers Are Disabled"

FIX_SECURE = secure_fix()
FIX_TLS12 = secure_fix("--tls-min", "1.2")
FIX_TLS13 = secure_fix("--tls-min", "1.3")


def fix_host(host: str) -> str:
    """The command that reissues the server certificate with ``host`` as a subjectAltName."""
    return secure_fix("--host", shlex.quote(host))


def _names(suites: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(suites[:limit])
    return shown + (f" and {len(suites) - limit} more" if len(suites) > limit else "")


def _suite(name: str) -> CipherSuite | None:
    return BY_NAME.get(name)


def cipher_findings(ciphers: Mapping[str, Sequence[str]]) -> list[Finding]:
    """Judge every accepted suite by the ratings in :mod:`cipher_suites`.

    Three separate findings, because they have separate fixes and separate urgency: broken suites (NULL,
    EXPORT, RC4, DES, anonymous, MD5) can be exploited; suites without forward secrecy expose all past
    traffic once the key leaks; CBC suites are the padding-oracle family. ``ssl_ciphers`` of ``pgbatten
    secure`` (forward-secret AEAD only) removes all three.
    """
    insecure: list[str] = []
    no_fs: list[str] = []
    non_aead: list[str] = []
    for protocol, names in ciphers.items():
        for name in names:
            suite = _suite(name)
            label = f"{name} ({protocol})"
            if suite is None:
                continue
            if suite.rating is Rating.INSECURE:
                insecure.append(label)
                continue
            if not suite.forward_secret:
                no_fs.append(label)
            if not suite.is_aead:
                non_aead.append(label)
    out: list[Finding] = []
    if insecure:
        out.append(
            Finding(
                "cipher-insecure",
                "high",
                f"{len(insecure)} broken cipher suite(s) accepted",
                f"NULL, EXPORT, RC4, DES, anonymous or MD5 suites: {_names(insecure)}",
                FIX_SECURE,
                CIS_CIPHERS,
            )
        )
    if no_fs:
        out.append(
            Finding(
                "cipher-no-forward-secrecy",
                "medium",
                f"{len(no_fs)} cipher suite(s) without forward secrecy accepted",
                "static RSA/DH key exchange: whoever obtains the server key later can decrypt recorded "
                f"sessions: {_names(no_fs)}",
                FIX_SECURE,
                CIS_CIPHERS,
            )
        )
    if non_aead:
        out.append(
            Finding(
                "cipher-non-aead",
                "medium",
                f"{len(non_aead)} CBC (non-AEAD) cipher suite(s) accepted",
                f"CBC with HMAC is the padding-oracle family (Lucky13, Sweet32 for 3DES): {_names(non_aead)}",
                FIX_SECURE,
                CIS_CIPHERS,
            )
        )
    return out


_WEAK_GROUP_PREFIXES = ("sect", "secp160", "secp192", "secp224", "secp256k1")


def group_findings(groups: Sequence[str], dh_prime_bits: Sequence[int]) -> list[Finding]:
    """Key-exchange groups below 128-bit strength, binary curves, and short finite-field DH primes."""
    weak = [g for g in groups if g in GROUP_BY_NAME and g.startswith(_WEAK_GROUP_PREFIXES)]
    out: list[Finding] = []
    if weak:
        out.append(
            Finding(
                "weak-groups",
                "medium",
                f"Weak key-exchange group(s) accepted: {', '.join(weak)}",
                "binary or sub-256-bit curves, or secp256k1 (no standard TLS curve): "
                "use x25519, prime256v1 or secp384r1",
                "set ssl_ecdh_curve = 'prime256v1' (ssl_groups = 'X25519:prime256v1' from 18): " + FIX_SECURE,
                CIS_CIPHERS,
            )
        )
    short = [b for b in dh_prime_bits if b < 2048]
    if short:
        out.append(
            Finding(
                "weak-dh",
                "high" if min(short) < 1024 else "medium",
                f"DHE with a {min(short)}-bit prime",
                "finite-field DH below 2048 bits is within reach of precomputation (Logjam)",
                f"remove DHE suites ({FIX_SECURE}) or set ssl_dh_params_file to a 2048-bit or larger group",
                CIS_CIPHERS,
            )
        )
    return out


def preference_findings(server_preference: Mapping[str, bool | None]) -> list[Finding]:
    """Informational: a server that lets the client pick among its suites."""
    client_order = [p for p, pref in server_preference.items() if pref is False]
    if not client_order:
        return []
    return [
        Finding(
            "server-preference-not-enforced",
            "info",
            "Server lets the client choose the cipher suite",
            f"for {', '.join(client_order)}; harmless when every accepted suite is strong",
            "set ssl_prefer_server_ciphers = on (the default) in postgresql.conf",
        )
    ]


def protocol_findings(protocols: Sequence[str]) -> list[Finding]:
    """Old versions accepted, TLS 1.3 missing."""
    out: list[Finding] = []
    if "SSLv3" in protocols:
        out.append(
            Finding("ssl3-accepted", "critical", "SSL 3.0 is accepted", "POODLE", FIX_TLS12, CIS_OLD_TLS)
        )
    if "TLSv1" in protocols:
        out.append(
            Finding(
                "tls10-accepted",
                "high",
                "TLS 1.0 is accepted",
                "deprecated by RFC 8996",
                FIX_TLS12,
                CIS_OLD_TLS,
            )
        )
    if "TLSv1.1" in protocols:
        out.append(
            Finding(
                "tls11-accepted",
                "medium",
                "TLS 1.1 is accepted",
                "deprecated by RFC 8996",
                FIX_TLS12,
                CIS_OLD_TLS,
            )
        )
    if protocols and "TLSv1.3" not in protocols:
        out.append(
            Finding(
                "tls13-not-supported",
                "low",
                "TLS 1.3 is not accepted",
                "PostgreSQL 12+ built with OpenSSL 1.1.1+ supports it; check ssl_max_protocol_version",
                None,
                CIS_TLS13,
            )
        )
    return out


def direct_ssl_findings(supported: bool | None) -> list[Finding]:
    """Informational: PostgreSQL 17 direct SSL saves a round trip and lets TLS-terminating proxies route."""
    if supported is not True:
        return []
    return [
        Finding(
            "direct-ssl-supported",
            "info",
            "Server accepts direct TLS (PostgreSQL 17+, ALPN postgresql)",
            "clients may connect with sslnegotiation=direct, skipping the SSLRequest round trip",
        )
    ]


# --------------------------------------------------------------------------------------------- the session


def not_postgresql(detail: str) -> Finding:
    """The target answered SSLRequest with something no PostgreSQL server sends."""
    return Finding("not-postgresql", "high", "Target does not speak the PostgreSQL protocol", detail)


def audit_deadline(detail: str) -> Finding:
    """The per-target deadline cut the audit short."""
    return Finding("audit-deadline", "low", "The audit of this target ran out of time", detail)


def plaintext_findings(plaintext: PlaintextResult | None) -> list[Finding]:
    """What the unencrypted login attempt showed."""
    if plaintext is None:
        return []
    if plaintext.verdict is None:
        return [
            Finding(
                "plaintext-undetermined",
                "low",
                "Could not tell whether plaintext logins are accepted",
                plaintext.error or "no answer",
            )
        ]
    if plaintext.verdict.accepted is True:
        return [
            Finding(
                "plaintext-accepted",
                "critical",
                "Server accepts unencrypted logins",
                plaintext.verdict.reason,
                FIX_SECURE,
                CIS_TLS,
            )
        ]
    if plaintext.verdict.accepted is None:
        return [
            Finding(
                "plaintext-undetermined",
                "low",
                "Could not tell whether plaintext logins are accepted",
                plaintext.verdict.reason,
            )
        ]
    return []


def buffered_plaintext_findings(verdict: BufferedVerdict | None) -> list[Finding]:
    """CVE-2021-23214: a server that processes bytes sent before the TLS handshake."""
    if verdict is None or verdict.processed is not True:
        return []
    return [
        Finding(
            "buffered-plaintext-processed",
            "high",
            "Server processes plaintext bytes sent before the TLS handshake (CVE-2021-23214)",
            f"{verdict.detail}. A man in the middle can inject messages ahead of a client's TLS session, and "
            "the server takes them as that client's.",
            "upgrade PostgreSQL to a minor release with the fix (14.1, 13.5, 12.9, 11.14, 10.19 or later)",
        )
    ]


def _attempts_detail(scan: TlsScan, *, only_with_detail: bool = False) -> str:
    return "; ".join(f"{a.version}: {a.detail}" for a in scan.attempts if a.detail or not only_with_detail)


def tls_findings(scan: TlsScan, protocols: Sequence[str], full: bool) -> list[Finding]:
    """The SSLRequest answer, bytes after it, the handshakes and the protocol versions accepted."""
    out: list[Finding] = []
    resp = scan.ssl_response
    if scan.extra_after_s:
        out.append(
            Finding(
                "bytes-after-ssl-response",
                "high",
                "Unencrypted bytes followed the server's answer to SSLRequest",
                f"{len(scan.extra_after_s)} bytes arrived before the TLS handshake: "
                f"{wire.printable_preview(scan.extra_after_s)!r}. "
                "Clients without the CVE-2021-23222 fix would treat them as if they came over TLS; "
                "this suggests a man in the middle or a broken proxy.",
                "find what sits between client and server on this path",
            )
        )
    if resp is not None and resp.answer in (wire.SslAnswer.REFUSED, wire.SslAnswer.ERROR):
        out.append(
            Finding(
                "tls-not-supported", "critical", "Server does not offer TLS", resp.detail, FIX_SECURE, CIS_TLS
            )
        )
        return out
    if resp is not None and resp.answer is wire.SslAnswer.ACCEPTED and not protocols:
        out.append(
            Finding(
                "tls-handshake-failed",
                "critical",
                "Server says it accepts TLS, but no handshake succeeded",
                scan.stalled or _attempts_detail(scan) or "no handshake",
                None,
                CIS_TLS,
            )
        )
    elif scan.stalled:
        out.append(
            Finding("tls-scan-incomplete", "low", "Not every TLS version could be tried", scan.stalled)
        )
    elif full and protocols and scan.best is None:
        modern = {v.label for v in (TlsVersion.TLSv1_2, TlsVersion.TLSv1_3)}
        if any(p in modern for p in protocols):
            out.append(
                Finding(
                    "tls-handshake-incomplete",
                    "high",
                    "Server picks TLS 1.2/1.3 suites, but a libpq-like client cannot complete a handshake",
                    _attempts_detail(scan, only_with_detail=True) or "handshake failed",
                )
            )
    out += protocol_findings(protocols)
    for a in scan.attempts:
        if a.status is VersionStatus.NOT_TESTABLE:
            out.append(Finding("version-not-testable", "info", f"{a.version} could not be tried", a.detail))
    return out


def enumeration_findings(enum: TlsEnumeration) -> list[Finding]:
    """Suites, groups and preference from the enumeration, and whether it finished."""
    out = cipher_findings(enum.ciphers)
    out += group_findings(enum.groups, enum.dh_prime_bits)
    out += preference_findings(enum.server_preference)
    if enum.errors:
        out.append(
            Finding(
                "enumeration-incomplete",
                "low",
                "The cipher-suite enumeration stopped early",
                "; ".join(e.reason for e in enum.errors),
            )
        )
    return out


__all__ = [
    "CIS_CIPHERS",
    "CIS_OLD_TLS",
    "CIS_TLS",
    "CIS_TLS13",
    "FINDING_SEVERITIES",
    "FIX_SECURE",
    "FIX_TLS12",
    "FIX_TLS13",
    "audit_deadline",
    "buffered_plaintext_findings",
    "cipher_findings",
    "direct_ssl_findings",
    "enumeration_findings",
    "fix_host",
    "group_findings",
    "not_postgresql",
    "plaintext_findings",
    "preference_findings",
    "protocol_findings",
    "tls_findings",
]
