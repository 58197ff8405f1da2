"""``pgbatten check``: the outside proof that a PostgreSQL server is TLS-only, graded.

Shaped like sslyze: :func:`check_target` does the I/O (``probe.tls``), :func:`aggregate` turns what it saw
into a frozen :class:`CheckResult` without touching the network, and a failing sub-check is recorded as data
(a finding, an ``error``) rather than aborting the scan.

Two modes. The quick check (the default of :func:`check_target`, what ``pgbatten secure`` runs after every
change) costs a handful of connections: one TLS 1.2-1.3 handshake, one per older version, one plaintext
probe. The full audit (``full=True``, the default of ``pgbatten check``) replaces the per-version handshakes
by the shrinking-offer enumeration of :mod:`probe.enumerate` and adds the direct-SSL probe:

* 1 connection: SSLRequest and a complete libpq-like handshake (the answer to SSLRequest, bytes after
  ``S``, the certificate chain even under TLS 1.3);
* n + a few connections: every accepted suite per version, groups and server preference (skipped when the
  first connection already showed there is no TLS, or the server stalled);
* 1 connection: the plaintext login probe;
* 1 connection: direct SSL, offered at the best version the enumeration found (skipped without TLS).

Grading rules (:data:`GRADE_RULES`, quoted by the README). Start at A; the lowest cap that applies wins:

* F - the server accepts a plaintext login, or no TLS connection can be made.
* C - the certificate is expired or not yet valid, SSL 3.0, TLS 1.0 or 1.1 is accepted, or a broken cipher
  suite (NULL, EXPORT, RC4, DES, anonymous, MD5) is accepted.
* B - no ``sslmode=verify-full`` client could accept the certificate for the host given (host-name mismatch,
  or with ``--ca`` a chain that does not verify or lacks an intermediate), a weak suite (no forward secrecy,
  or CBC), a weak group or DH prime is accepted, or any other high or critical finding.
* A - none of the above.
* A+ - A, and plaintext refused, only TLS 1.2 or newer and TLS 1.3 among them, verify-full succeeds with the
  ``--ca`` given, and no medium, high or critical finding.
* ``-`` - not graded: the target was unreachable or is not a PostgreSQL server.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import verification

from pgbatten.certfacts import CertificateInfo, is_self_signed, load_der_chain
from pgbatten.findings import SEVERITY_ORDER, Finding, finding_to_json
from pgbatten.probe import enumerate as tlsenum
from pgbatten.probe import findings as cat
from pgbatten.probe import tls as tlsio
from pgbatten.probe import wire
from pgbatten.probe.hostname import HostMatch, hostname_matches
from pgbatten.probe.tlsraw import TlsVersion

GRADES: tuple[str, ...] = ("A+", "A", "B", "C", "D", "E", "F")
NOT_GRADED = "-"

GRADE_RULES: tuple[tuple[str, str], ...] = (
    ("F", "the server accepts a plaintext login, or no TLS connection can be made"),
    (
        "C",
        "the certificate is expired or not yet valid, SSL 3.0, TLS 1.0 or 1.1 is accepted, or a broken "
        "cipher suite (NULL, EXPORT, RC4, DES, anonymous, MD5) is accepted",
    ),
    (
        "B",
        "no verify-full client could accept the certificate for the host given (host-name mismatch, or "
        "with --ca a chain that does not verify or lacks an intermediate), a weak suite (no forward "
        "secrecy, or CBC), a weak group or DH prime is accepted, or any other high or critical finding",
    ),
    ("A", "none of the above"),
    (
        "A+",
        "A, and plaintext refused, only TLS 1.2 or newer and TLS 1.3 among them, verify-full succeeds with "
        "the --ca given, and no medium, high or critical finding",
    ),
    (NOT_GRADED, "not graded: unreachable, or not a PostgreSQL server"),
)

EXPIRES_SOON = dt.timedelta(days=30)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = frozenset({"md5", "sha1", "md2", "md4"})

_CAP_F = frozenset({"plaintext-accepted", "tls-not-supported", "tls-handshake-failed"})
_CAP_C = frozenset(
    {
        "cert-expired",
        "cert-not-yet-valid",
        "ssl3-accepted",
        "tls10-accepted",
        "tls11-accepted",
        "cipher-insecure",
    }
)
_CAP_B = frozenset(
    {
        "hostname-mismatch",
        "untrusted-issuer",
        "chain-incomplete",
        "cipher-no-forward-secrecy",
        "cipher-non-aead",
        "weak-groups",
        "weak-dh",
    }
)

DEADLINE_FACTOR = 20
"""The whole audit of one target ends after this many ``timeout``s, whatever the server does."""


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class VerifyFull:
    """Would ``sslmode=verify-full`` succeed for ``host``? ``trusted`` is None when no ``--ca`` was given."""

    host: str
    name_ok: bool
    name_reason: str
    trusted: bool | None
    trust_reason: str

    @property
    def ok(self) -> bool | None:
        """True/False when decidable; None when the name fits but no CA was given to judge the chain."""
        if not self.name_ok or self.trusted is False:
            return False
        return None if self.trusted is None else True

    @property
    def why(self) -> str:
        """One line explaining :attr:`ok`."""
        if not self.name_ok:
            return self.name_reason
        return self.trust_reason if self.trusted is not True else f"{self.name_reason}; {self.trust_reason}"


@dataclass(frozen=True)
class CheckResult:
    """Everything ``pgbatten check`` learned about one target."""

    target: wire.Target
    reachable: bool
    plaintext_accepted: bool | None
    tls_supported: bool
    protocols: tuple[str, ...]
    cipher: str | None
    certificate: CertificateInfo | None
    verify_full: tuple[VerifyFull, ...]
    findings: tuple[Finding, ...]
    grade: str
    connections_used: int
    error: str | None = None
    chain_complete: bool | None = None
    """True: ends at a root, or at a certificate issued by the --ca given; None: cannot tell from outside."""
    version_attempts: tuple[tlsio.VersionAttempt, ...] = field(default_factory=tuple)
    mode: Literal["quick", "full"] = "quick"
    ciphers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Full audit: accepted IANA suite names per protocol, in the server's order when it enforces one."""
    server_preference: Mapping[str, bool | None] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    chain: tuple[CertificateInfo, ...] = ()
    """Every certificate the server sent, leaf first."""
    chain_in_order: bool | None = None
    direct_ssl: bool | None = None
    connections_by_step: Mapping[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    notes: tuple[str, ...] = ()

    @classmethod
    def ungraded(
        cls,
        target: wire.Target,
        error: str | None,
        *,
        reachable: bool = False,
        connections: int = 0,
        findings: tuple[Finding, ...] = (),
        **extra: Any,
    ) -> CheckResult:
        """A target that could not be graded: unreachable, silent, not PostgreSQL, or an internal error."""
        return cls(
            target=target,
            reachable=reachable,
            plaintext_accepted=None,
            tls_supported=False,
            protocols=(),
            cipher=None,
            certificate=None,
            verify_full=(),
            findings=findings,
            grade=NOT_GRADED,
            connections_used=connections,
            error=error,
            **extra,
        )


# ------------------------------------------------------------------------------------- certificate facts


def chain_trusted(
    chain: Sequence[x509.Certificate], ca: Sequence[x509.Certificate], now: dt.datetime
) -> tuple[bool, str]:
    """Does ``chain`` (leaf first) lead to one of ``ca``?

    The trust check alone, leaving names to :func:`hostname_matches`: libpq asks OpenSSL for a chain and
    applies its own name rules (CN fallback included), which cryptography's server verifier does not do.
    Extension policies are therefore relaxed to what OpenSSL's default chain verification demands.
    """
    if not chain:
        return False, "the server sent no certificate"
    if not ca:
        return False, "no CA certificates given"
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(list(ca)))
            .time(now)
            .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        verifier.verify(chain[0], list(chain[1:]))
    except verification.VerificationError as exc:
        return False, f"certificate chain does not verify against the CA given: {exc}"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return False, f"certificate chain could not be evaluated: {exc}"
    return True, "chain verifies against the CA given"


# --------------------------------------------------------------------------------------------- findings


def _plaintext_findings(plaintext: tlsio.PlaintextResult | None) -> list[Finding]:
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
                cat.FIX_SECURE,
                cat.CIS_TLS,
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


def _certificate_findings(
    info: CertificateInfo, verify: Sequence[VerifyFull], ca_given: bool, now: dt.datetime
) -> list[Finding]:
    out: list[Finding] = []
    if now > info.not_after:
        out.append(
            Finding(
                "cert-expired",
                "high",
                "Server certificate has expired",
                f"expired {info.not_after}",
                cat.FIX_SECURE,
                cat.CIS_TLS,
            )
        )
    elif now < info.not_before:
        out.append(
            Finding(
                "cert-not-yet-valid",
                "high",
                "Server certificate is not yet valid",
                f"valid from {info.not_before}: check the server's clock",
                cat.FIX_SECURE,
                cat.CIS_TLS,
            )
        )
    elif info.not_after - now < EXPIRES_SOON:
        days = (info.not_after - now).days
        out.append(
            Finding(
                "cert-expires-soon",
                "medium",
                f"Server certificate expires in {days} days",
                f"expires {info.not_after}",
                cat.FIX_SECURE,
            )
        )
    if info.self_signed:
        out.append(
            Finding(
                "cert-self-signed",
                "low",
                "Server certificate is self-signed",
                "clients must hold this exact certificate as root.crt, "
                "and every renewal means redistributing it",
                cat.FIX_SECURE,
                cat.CIS_TLS,
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
                    cat.fix_host(v.host),
                    cat.CIS_TLS,
                )
            )
        if ca_given and v.trusted is False:
            out.append(
                Finding(
                    "untrusted-issuer",
                    "high",
                    "Certificate does not chain to the CA given",
                    v.trust_reason,
                    f"{cat.FIX_SECURE} (issues from the pgbatten CA), or check the --ca file",
                    cat.CIS_TLS,
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
                "pgbatten secure --pgdata DIR --key-type ecdsa-p256",
                cat.CIS_TLS,
            )
        )
    return out


@dataclass(frozen=True)
class ChainFacts:
    """What the presented chain says about itself and about the CA given."""

    in_order: bool | None
    complete: bool | None
    findings: tuple[Finding, ...]


def chain_facts(
    chain: Sequence[x509.Certificate], ca: Sequence[x509.Certificate] | None, *, whole: bool = True
) -> ChainFacts:
    """Order, completeness and signature hashes of ``chain`` (leaf first, as sent). Pure.

    In order: each certificate is issued by the next one. Complete: the last one sent is a root
    (self-signed) or, with ``--ca``, issued by one of the CA certificates; without ``--ca`` and without a
    root at the end, completeness cannot be told from outside (None). ``whole`` is False when only the
    leaf could be read, which says nothing about the rest.
    """
    out: list[Finding] = []
    if not chain:
        return ChainFacts(None, None, ())
    infos = [CertificateInfo.from_certificate(c) for c in chain]
    # A root's own signature is never checked by clients: skip self-signed certificates after the leaf.
    out += signature_findings([info for i, info in enumerate(infos) if i == 0 or not info.self_signed])
    if not whole:
        return ChainFacts(None, None, tuple(out))
    in_order = all(chain[i].issuer == chain[i + 1].subject for i in range(len(chain) - 1))
    if not in_order:
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
    last = chain[-1]
    complete: bool | None
    if is_self_signed(last):
        complete = True
    elif ca:
        complete = any(c.subject == last.issuer for c in ca) or any(c.subject == last.subject for c in ca)
    else:
        complete = None
    if complete is False:
        out.append(
            Finding(
                "chain-incomplete",
                "medium",
                "Certificate chain lacks an intermediate",
                f"the server does not send the issuer of {last.subject.rfc4514_string()} "
                f"({last.issuer.rfc4514_string()}), and the CA given does not hold it",
                "append the intermediate certificate(s) to ssl_cert_file, then reload",
                cat.CIS_TLS,
            )
        )
    return ChainFacts(in_order, complete, tuple(out))


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
                    cat.FIX_SECURE,
                    cat.CIS_TLS,
                )
            )
    return out


def _tls_findings(scan: tlsio.TlsScan, protocols: Sequence[str], full: bool) -> list[Finding]:
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
                "tls-not-supported",
                "critical",
                "Server does not offer TLS",
                resp.detail,
                cat.FIX_SECURE,
                cat.CIS_TLS,
            )
        )
        return out
    if resp is not None and resp.answer is wire.SslAnswer.ACCEPTED and not protocols:
        detail = (
            scan.stalled or "; ".join(f"{a.version}: {a.detail}" for a in scan.attempts) or "no handshake"
        )
        out.append(
            Finding(
                "tls-handshake-failed",
                "critical",
                "Server says it accepts TLS, but no handshake succeeded",
                detail,
                None,
                cat.CIS_TLS,
            )
        )
    elif scan.stalled:
        out.append(
            Finding("tls-scan-incomplete", "low", "Not every TLS version could be tried", scan.stalled)
        )
    elif full and protocols and scan.best is None:
        detail = "; ".join(f"{a.version}: {a.detail}" for a in scan.attempts if a.detail)
        if any(p in ("TLSv1.2", "TLSv1.3") for p in protocols):
            out.append(
                Finding(
                    "tls-handshake-incomplete",
                    "high",
                    "Server picks TLS 1.2/1.3 suites, but a libpq-like client cannot complete a handshake",
                    detail or "handshake failed",
                )
            )
    out += cat.protocol_findings(protocols)
    for a in scan.attempts:
        if a.status is tlsio.VersionStatus.NOT_TESTABLE:
            out.append(Finding("version-not-testable", "info", f"{a.version} could not be tried", a.detail))
    return out


def _enumeration_findings(enum: tlsenum.TlsEnumeration) -> list[Finding]:
    out = cat.cipher_findings(enum.ciphers)
    out += cat.group_findings(enum.groups, enum.dh_prime_bits)
    out += cat.preference_findings(enum.server_preference)
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


# --------------------------------------------------------------------------------------------- grading


def _cap(grade_now: str, cap: str) -> str:
    return cap if GRADES.index(cap) > GRADES.index(grade_now) else grade_now


def grade(
    findings: Iterable[Finding],
    *,
    reachable: bool = True,
    plaintext_accepted: bool | None = None,
    protocols: Sequence[str] = (),
    verify_full_ok: bool | None = None,
) -> str:
    """Apply :data:`GRADE_RULES`."""
    if not reachable:
        return NOT_GRADED
    found = list(findings)
    ids = {f.id for f in found}
    if "not-postgresql" in ids:
        return NOT_GRADED
    result = "A"
    if plaintext_accepted is True or ids & _CAP_F or not protocols:
        result = _cap(result, "F")
    if ids & _CAP_C:
        result = _cap(result, "C")
    if ids & _CAP_B or any(f.severity in ("critical", "high") for f in found):
        result = _cap(result, "B")
    if (
        result == "A"
        and plaintext_accepted is False
        and protocols
        and all(p in ("TLSv1.2", "TLSv1.3") for p in protocols)
        and "TLSv1.3" in protocols
        and verify_full_ok is True
        and not any(f.severity in ("critical", "high", "medium") for f in found)
    ):
        result = "A+"
    return result


def with_findings(result: CheckResult, extra: Iterable[Finding]) -> CheckResult:
    """``result`` with ``extra`` findings (e.g. from the server-side audit) added and the grade redone."""
    found = sorted((*result.findings, *extra), key=_finding_order)
    verify_ok = result.verify_full[0].ok if result.verify_full else None
    return replace(
        result,
        findings=tuple(found),
        grade=grade(
            found,
            reachable=result.reachable,
            plaintext_accepted=result.plaintext_accepted,
            protocols=result.protocols,
            verify_full_ok=verify_ok,
        ),
    )


def _finding_order(f: Finding) -> tuple[int, str]:
    return SEVERITY_ORDER.index(f.severity), f.id


# --------------------------------------------------------------------------------------------- aggregation


def aggregate(
    target: wire.Target,
    scan: tlsio.TlsScan,
    plaintext: tlsio.PlaintextResult | None,
    *,
    ca: Sequence[x509.Certificate] | None,
    now: dt.datetime,
    enumeration: tlsenum.TlsEnumeration | None = None,
    direct: tlsenum.DirectSsl | None = None,
    deadline_hit: str | None = None,
    elapsed: float = 0.0,
) -> CheckResult:
    """Turn raw observations into a :class:`CheckResult`. Pure: no I/O."""
    full = enumeration is not None or direct is not None
    steps = {"tls_handshakes": scan.connections}
    if enumeration is not None:
        steps["enumeration"] = enumeration.connections
    if plaintext is not None:
        steps["plaintext"] = 1 if plaintext.connected else 0
    if direct is not None:
        steps["direct_ssl"] = direct.connections
    connections = sum(steps.values())
    mode: Literal["quick", "full"] = "full" if full else "quick"
    common: dict[str, Any] = {"connections_by_step": steps, "elapsed": elapsed, "mode": mode}
    findings: list[Finding] = []
    if scan.unreachable is not None:
        return CheckResult.ungraded(target, scan.unreachable, connections=connections, **common)
    resp = scan.ssl_response
    if resp is not None and resp.answer is wire.SslAnswer.CLOSED:
        # Nothing answered: a proxy with no backend, a server at its connection limit, or not PostgreSQL.
        return CheckResult.ungraded(target, resp.detail, connections=connections, **common)
    if resp is not None and resp.answer is wire.SslAnswer.UNEXPECTED:
        findings.append(
            Finding("not-postgresql", "high", "Target does not speak the PostgreSQL protocol", resp.detail)
        )
        return CheckResult.ungraded(
            target, resp.detail, reachable=True, connections=connections, findings=tuple(findings), **common
        )

    protocols = tuple(scan.accepted_versions)
    if enumeration is not None and (enumeration.protocols or not protocols):
        # The enumeration offers every version the raw hello can carry; the stdlib one stops at 1.2.
        protocols = tuple(dict.fromkeys((*enumeration.protocols, *protocols)))
        protocols = tuple(sorted(protocols, key=_PROTOCOL_ORDER.index))
    findings += _tls_findings(scan, protocols, full)
    findings += _plaintext_findings(plaintext)
    if enumeration is not None:
        findings += _enumeration_findings(enumeration)
    if direct is not None:
        findings += cat.direct_ssl_findings(direct.supported)
    if deadline_hit:
        findings.append(
            Finding("audit-deadline", "low", "The audit of this target ran out of time", deadline_hit)
        )

    cert_info: CertificateInfo | None = None
    chain_infos: tuple[CertificateInfo, ...] = ()
    verify: list[VerifyFull] = []
    error: str | None = None
    facts = ChainFacts(None, None, ())
    best = scan.best
    ders: Sequence[bytes] = best.chain if best is not None else ()
    whole = best.full_chain if best is not None else False
    if not ders and enumeration is not None and enumeration.certificate_chain_der:
        ders, whole = enumeration.certificate_chain_der, True
    if ders:
        chain, load_problem = load_der_chain(ders)
        if load_problem is not None:
            error = load_problem
        if chain:
            leaf = chain[0]
            cert_info = CertificateInfo.from_certificate(leaf)
            chain_infos = tuple(CertificateInfo.from_certificate(c) for c in chain)
            match: HostMatch = hostname_matches(leaf, target.host)
            if ca:
                trusted, trust_reason = chain_trusted(chain, ca, now)
                if not trusted and not whole:
                    trust_reason += " (only the leaf certificate could be read from this connection)"
                trusted_opt: bool | None = trusted
            else:
                trusted_opt, trust_reason = None, "no --ca given, chain not checked"
            verify.append(VerifyFull(target.host, match.matched, match.reason, trusted_opt, trust_reason))
            findings += _certificate_findings(cert_info, verify, bool(ca), now)
            facts = chain_facts(chain, ca, whole=whole)
            findings += facts.findings
    elif protocols and error is None:
        error = "the server sent no certificate"

    plaintext_accepted = plaintext.verdict.accepted if plaintext and plaintext.verdict else None
    findings.sort(key=_finding_order)
    verify_ok = verify[0].ok if verify else None
    return CheckResult(
        target=target,
        reachable=True,
        plaintext_accepted=plaintext_accepted,
        tls_supported=bool(protocols),
        protocols=protocols,
        cipher=best.cipher if best else None,
        certificate=cert_info,
        verify_full=tuple(verify),
        findings=tuple(findings),
        grade=grade(
            findings,
            plaintext_accepted=plaintext_accepted,
            protocols=protocols,
            verify_full_ok=verify_ok,
        ),
        connections_used=connections,
        error=error or (plaintext.error if plaintext and plaintext.verdict is None else None),
        chain_complete=facts.complete,
        version_attempts=scan.attempts,
        ciphers=dict(enumeration.ciphers) if enumeration else {},
        server_preference=dict(enumeration.server_preference) if enumeration else {},
        groups=enumeration.groups if enumeration else (),
        chain=chain_infos,
        chain_in_order=facts.in_order,
        direct_ssl=direct.supported if direct else None,
        notes=enumeration.notes if enumeration else (),
        **common,
    )


_PROTOCOL_ORDER = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


# ------------------------------------------------------------------------------------- I/O entry point


class _Budget:
    """The per-target deadline: every step gets at most ``timeout`` and never more than what is left."""

    def __init__(self, timeout: float, total: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + total
        self.exhausted: str | None = None

    def left(self) -> float:
        return self.end - time.monotonic()

    def step(self, what: str) -> float | None:
        """Seconds for the next step, or None (and remember why) when the deadline has passed."""
        left = self.left()
        if left <= 0.05:
            self.exhausted = self.exhausted or f"deadline reached before {what}"
            return None
        return min(self.timeout, left)


def check_target(
    target: wire.Target | str,
    *,
    ca: Sequence[x509.Certificate] | None = None,
    timeout: float = 5.0,
    now: dt.datetime | None = None,
    full: bool = False,
    deadline: float | None = None,
    direct_ssl: bool = True,
) -> CheckResult:
    """Probe one target over the network and grade it. Never raises for network trouble, nor for a bug met
    on the way: that becomes an ungraded result whose ``error`` names it, so a fleet goes on.

    ``target`` may be a :class:`wire.Target` or ``"host[:port]"`` text (a :class:`UsageError` if invalid).
    ``timeout`` bounds each connection; ``deadline`` (default ``DEADLINE_FACTOR * timeout``) the whole target.
    The quick check (default): 1 connection for TLS 1.2/1.3 plus 1 per older version tried, plus 1 plaintext
    login attempt. ``full``: the audit described in the module docstring (``direct_ssl=False`` skips its
    direct-SSL connection). Fewer connections when the answer is already known (no TLS, unreachable, not
    PostgreSQL).
    """
    if isinstance(target, str):
        target = wire.parse_target(target)
    started = time.monotonic()
    try:
        return _check_target(
            target, ca=ca, timeout=timeout, now=now, full=full, deadline=deadline, direct_ssl=direct_ssl
        )
    except Exception as exc:  # a bug met on one target must not abort a fleet: report it as this target's
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CheckResult.ungraded(
            target,
            f"the audit failed with an internal error ({type(exc).__name__}: {detail}); please report it",
            mode="full" if full else "quick",
            elapsed=time.monotonic() - started,
        )


def _check_target(
    target: wire.Target,
    *,
    ca: Sequence[x509.Certificate] | None,
    timeout: float,
    now: dt.datetime | None,
    full: bool,
    deadline: float | None,
    direct_ssl: bool,
) -> CheckResult:
    started = time.monotonic()
    budget = _Budget(timeout, deadline if deadline is not None else DEADLINE_FACTOR * timeout)
    host, port = target.host, target.port
    enumeration: tlsenum.TlsEnumeration | None = None
    direct: tlsenum.DirectSsl | None = None
    plaintext: tlsio.PlaintextResult | None = None
    if full:
        scan = tlsio.first_handshake(host, port, timeout=timeout)
    else:
        scan = tlsio.tls_versions_accepted(host, port, timeout=timeout)
    resp = scan.ssl_response
    answered = scan.unreachable is None and resp is not None
    is_pg = (
        answered
        and resp is not None
        and resp.answer not in (wire.SslAnswer.UNEXPECTED, wire.SslAnswer.CLOSED)
    )
    tls_ok = is_pg and resp is not None and resp.answer is wire.SslAnswer.ACCEPTED
    if full and tls_ok and not scan.stalled and not scan.extra_after_s:
        step = budget.step("the cipher-suite enumeration")
        if step is not None:
            # Leave room for the two single connections that follow.
            enumeration = tlsenum.enumerate_tls(
                host, port, timeout=step, deadline=max(budget.left() - 2 * step, step)
            )
    if is_pg:
        step = budget.step("the plaintext probe")
        if step is not None:
            plaintext = tlsio.probe_plaintext(host, port, step)
    if full and direct_ssl and tls_ok and not scan.stalled and not scan.extra_after_s:
        step = budget.step("the direct-SSL probe")
        if step is not None:
            direct = tlsenum.direct_ssl_probe(
                host, port, timeout=step, version=_direct_version(enumeration, scan)
            )
    when = now if now is not None else dt.datetime.now(dt.UTC)
    return aggregate(
        target,
        scan,
        plaintext,
        ca=ca,
        now=when,
        enumeration=enumeration,
        direct=direct,
        deadline_hit=budget.exhausted,
        elapsed=time.monotonic() - started,
    )


def _direct_version(enumeration: tlsenum.TlsEnumeration | None, scan: tlsio.TlsScan) -> TlsVersion | None:
    """The best version known to be accepted, so the direct-SSL probe needs exactly one connection."""
    names = list(enumeration.protocols) if enumeration else []
    names += list(scan.accepted_versions)
    for version in (TlsVersion.TLSv1_3, TlsVersion.TLSv1_2):
        if version.label in names:
            return version
    return None


def check_targets(
    targets: Iterable[wire.Target | str],
    *,
    ca: Sequence[x509.Certificate] | None = None,
    timeout: float = 5.0,
    now: dt.datetime | None = None,
    full: bool = False,
) -> list[CheckResult]:
    """:func:`check_target` for each target, one after another (see :mod:`probe.fleet` for concurrency)."""
    return [check_target(t, ca=ca, timeout=timeout, now=now, full=full) for t in targets]


# --------------------------------------------------------------------------------------------- output


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _cert_json(cert: CertificateInfo) -> dict[str, Any]:
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "sans": list(cert.sans),
        "key_type": cert.key_type,
        "key_size": cert.key_size,
        "signature_algorithm": cert.signature_algorithm,
        "signature_hash": cert.signature_hash,
        "not_before": _iso(cert.not_before),
        "not_after": _iso(cert.not_after),
        "self_signed": cert.self_signed,
        "serial": cert.serial,
        "sha256": cert.sha256,
    }


def result_to_json(result: CheckResult) -> dict[str, Any]:
    """A JSON-ready dict; key names are a stable interface."""
    cert = result.certificate
    return {
        "target": str(result.target),
        "host": result.target.host,
        "port": result.target.port,
        "mode": result.mode,
        "reachable": result.reachable,
        "plaintext_accepted": result.plaintext_accepted,
        "tls_supported": result.tls_supported,
        "protocols": list(result.protocols),
        "ciphers": {p: list(names) for p, names in result.ciphers.items()},
        "server_preference": dict(result.server_preference),
        "groups": list(result.groups),
        "direct_ssl": result.direct_ssl,
        "version_attempts": [
            {"version": a.version, "status": str(a.status), "detail": a.detail}
            for a in result.version_attempts
        ],
        "cipher": result.cipher,
        "certificate": None if cert is None else _cert_json(cert),
        "chain": [_cert_json(c) for c in result.chain],
        "chain_complete": result.chain_complete,
        "chain_in_order": result.chain_in_order,
        "verify_full": {v.host: {"ok": v.ok, "why": v.why} for v in result.verify_full},
        "findings": [finding_to_json(f) for f in result.findings],
        "grade": result.grade,
        "connections_used": result.connections_used,
        "connections_by_step": dict(result.connections_by_step),
        "elapsed_seconds": round(result.elapsed, 3),
        "notes": list(result.notes),
        "error": result.error,
    }


EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNREACHABLE = 3


def exit_status(results: Iterable[CheckResult]) -> int:
    """3 if any target was unreachable, else 1 if any high or critical finding, else 0."""
    collected = list(results)
    if any(not r.reachable for r in collected):
        return EXIT_UNREACHABLE
    if any(f.severity in ("critical", "high") for r in collected for f in r.findings):
        return EXIT_FINDINGS
    return EXIT_OK


__all__ = [
    "DEADLINE_FACTOR",
    "GRADE_RULES",
    "CertificateInfo",
    "ChainFacts",
    "CheckResult",
    "VerifyFull",
    "aggregate",
    "chain_facts",
    "chain_trusted",
    "check_target",
    "check_targets",
    "exit_status",
    "grade",
    "result_to_json",
    "signature_findings",
    "with_findings",
]
