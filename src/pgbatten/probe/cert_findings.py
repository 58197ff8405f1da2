"""The certificate half of the finding catalogue: validity, names, trust, keys, signatures, the chain.

Pure functions from certificate facts to :class:`Finding` lists, beside :mod:`probe.findings` (whose
:data:`FINDING_SEVERITIES` lists these ids too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509

from pgbatten.certfacts import CertificateInfo
from pgbatten.findings import Finding, secure_fix
from pgbatten.probe.chain import ChainShape
from pgbatten.probe.findings import CIS_TLS, FIX_SECURE, fix_host
from pgbatten.probe.result import VerifyFull
from pgbatten.probe.trust import TrustStore

EXPIRES_SOON = dt.timedelta(days=30)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = frozenset({"md5", "sha1", "md2", "md4"})
LEGACY_IP_SANS = secure_fix("--legacy-ip-sans")


def _validity_findings(info: CertificateInfo, now: dt.datetime) -> list[Finding]:
    if now > info.not_after:
        return [
            Finding(
                "cert-expired",
                "high",
                "Server certificate has expired",
                f"expired {info.not_after}",
                FIX_SECURE,
                CIS_TLS,
            )
        ]
    if now < info.not_before:
        return [
            Finding(
                "cert-not-yet-valid",
                "high",
                "Server certificate is not yet valid",
                f"valid from {info.not_before}: check the server's clock",
                FIX_SECURE,
                CIS_TLS,
            )
        ]
    if info.not_after - now < EXPIRES_SOON:
        days = (info.not_after - now).days
        return [
            Finding(
                "cert-expires-soon",
                "medium",
                f"Server certificate expires in {days} days",
                f"expires {info.not_after}",
                FIX_SECURE,
            )
        ]
    return []


def certificate_findings(
    info: CertificateInfo, verify: Sequence[VerifyFull], ca_given: bool, now: dt.datetime
) -> list[Finding]:
    """The leaf's validity, self-signedness and key, and what each ``verify-full`` verdict found."""
    out = _validity_findings(info, now)
    if info.self_signed:
        out.append(
            Finding(
                "cert-self-signed",
                "low",
                "Server certificate is self-signed",
                "clients must hold this exact certificate as root.crt, "
                "and every renewal means redistributing it",
                FIX_SECURE,
                CIS_TLS,
            )
        )
    for v in verify:
        if not v.name_ok:
            out.append(
                Finding(
                    "hostname-mismatch",
                    "high",
                    f"Certificate does not match host name {v.host!r}",
                    v.name_reason,
                    fix_host(v.host),
                    CIS_TLS,
                )
            )
        if v.name_ok and v.old_client_name_ok is False:
            out.append(
                Finding(
                    "ip-san-needs-libpq-15",
                    "low",
                    f"Clients older than libpq 15 fail verify-full for {v.host!r}",
                    f"{v.old_client_name_reason}. libpq 14 and older (and the drivers and desktop tools "
                    "built on it) compare the host only with DNS names; libpq 15+ accepts the IP SAN.",
                    f"{LEGACY_IP_SANS} (also writes each address as a DNS name), or connect by name",
                )
            )
        if v.revoked:
            out.append(
                Finding(
                    "cert-revoked",
                    "high",
                    "Server certificate is revoked by the CRL given",
                    f"{v.trust_reason}: no client that checks CRLs (sslcrl) will connect",
                    f"{FIX_SECURE} (issues a new server certificate)",
                    CIS_TLS,
                )
            )
        elif ca_given and v.trusted is False and not (now > info.not_after or now < info.not_before):
            out.append(
                Finding(
                    "untrusted-issuer",
                    "high",
                    "A verify-full client rejects the certificate chain",
                    v.trust_reason,
                    f"{FIX_SECURE} (issues from the pgbatten CA), or check the --ca file",
                    CIS_TLS,
                )
            )
    weak_key = (
        (info.key_type == "RSA" and (info.key_size or 0) < MIN_RSA_BITS)
        or (info.key_type == "EC" and (info.key_size or 0) < MIN_EC_BITS)
        or info.key_type == "DSA"
    )
    if weak_key:
        out.append(
            Finding(
                "weak-key",
                "high",
                f"Weak {info.key_type} key ({info.key_size} bits)",
                f"use RSA >= {MIN_RSA_BITS} or EC >= {MIN_EC_BITS} bits",
                secure_fix("--key-type", "ecdsa-p256"),
                CIS_TLS,
            )
        )
    return out


def trust_setting_findings(store: TrustStore | None) -> list[Finding]:
    """What the target's own trust settings do in libpq that their author would not expect."""
    if store is None:
        return []
    return [
        Finding(
            "crl-not-loaded",
            "low",
            "libpq ignores the CRL settings given",
            note,
            "give sslcrl a PEM CRL file that exists (pgbatten crl refresh writes the CA's crl.pem)",
        )
        for note in store.notes
    ]


def signature_findings(chain: Sequence[CertificateInfo]) -> list[Finding]:
    """MD5/SHA-1 signatures on the certificates clients verify (leaf first)."""
    out: list[Finding] = []
    for i, info in enumerate(chain):
        if info.signature_hash in WEAK_HASHES:
            where = "Server certificate" if i == 0 else f"Chain certificate {i} ({info.subject})"
            out.append(
                Finding(
                    "weak-signature",
                    "high",
                    f"{where} signed with {info.signature_hash}",
                    f"{info.signature_algorithm}: collisions make forged certificates possible",
                    FIX_SECURE,
                    CIS_TLS,
                )
            )
    return out


def chain_findings(
    chain: Sequence[x509.Certificate], infos: Sequence[CertificateInfo], shape: ChainShape | None
) -> list[Finding]:
    """Weak signatures on what clients check, and (when the whole chain was read) order and completeness.

    A root's own signature is never checked by clients: self-signed certificates after the leaf are skipped.
    """
    out = signature_findings([info for i, info in enumerate(infos) if i == 0 or not info.self_signed])
    if shape is None:
        return out
    if not shape.in_order:
        out.append(
            Finding(
                "chain-misordered",
                "medium",
                "Certificate chain is not in order",
                "each certificate must be followed by its issuer (RFC 5246 7.4.2); strict clients fail: "
                + " -> ".join(c.subject.rfc4514_string() for c in chain),
                "put the server certificate first in ssl_cert_file, then each issuer in turn",
            )
        )
    if shape.complete is False:
        last = chain[-1]
        out.append(
            Finding(
                "chain-incomplete",
                "medium",
                "Certificate chain lacks an intermediate",
                f"the server does not send the issuer of {last.subject.rfc4514_string()} "
                f"({last.issuer.rfc4514_string()}), and the CA given does not hold it",
                "append the intermediate certificate(s) to ssl_cert_file, then reload",
                CIS_TLS,
            )
        )
    return out


__all__ = [
    "EXPIRES_SOON",
    "MIN_EC_BITS",
    "MIN_RSA_BITS",
    "WEAK_HASHES",
    "certificate_findings",
    "chain_findings",
    "signature_findings",
    "trust_setting_findings",
]
