"""``pgbatten check``: the outside proof that a PostgreSQL server is TLS-only, graded.

Shaped like sslyze: :func:`check_target` does the I/O (``probe.tls``), :func:`aggregate` turns what it saw
into a frozen :class:`CheckResult` without touching the network, and a failing sub-check is recorded as data
(a finding, an ``error``) rather than aborting the scan.

Grading rules (:data:`GRADE_RULES`, quoted by the README). Start at A; the lowest cap that applies wins:

* F - the server accepts a plaintext login, or no TLS connection can be made (``N``, error, or every
  handshake fails).
* C - the certificate is expired or not yet valid, or TLS 1.0 or 1.1 is accepted.
* B - no ``sslmode=verify-full`` client could accept the certificate for the host given (host-name mismatch,
  or, with ``--ca``, a chain that does not verify), or any other high or critical finding.
* A - none of the above.
* A+ - A, and plaintext refused, only TLS 1.2 or newer, verify-full succeeds with the ``--ca`` given, and
  no medium, high or critical finding.
* ``-`` - not graded: the target was unreachable or is not a PostgreSQL server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import verification

from pgbatten.errors import FileProblem
from pgbatten.probe import tls as tlsio
from pgbatten.probe import wire
from pgbatten.probe.hostname import HostMatch, hostname_matches

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITY_ORDER: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
GRADES: tuple[str, ...] = ("A+", "A", "B", "C", "D", "E", "F")
NOT_GRADED = "-"

GRADE_RULES: tuple[tuple[str, str], ...] = (
    ("F", "the server accepts a plaintext login, or no TLS connection can be made"),
    ("C", "the certificate is expired or not yet valid, or TLS 1.0 or 1.1 is accepted"),
    (
        "B",
        "no verify-full client could accept the certificate for the host given (host-name mismatch, or "
        "with --ca a chain that does not verify), or any other high or critical finding",
    ),
    ("A", "none of the above"),
    (
        "A+",
        "A, and plaintext refused, only TLS 1.2 or newer, verify-full succeeds with the --ca given, and no "
        "medium, high or critical finding",
    ),
    (NOT_GRADED, "not graded: unreachable, or not a PostgreSQL server"),
)

EXPIRES_SOON = dt.timedelta(days=30)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = frozenset({"md5", "sha1", "md2", "md4"})

_CAP_F = frozenset({"plaintext-accepted", "tls-not-supported", "tls-handshake-failed"})
_CAP_C = frozenset({"cert-expired", "cert-not-yet-valid", "tls10-accepted", "tls11-accepted"})
_CAP_B = frozenset({"hostname-mismatch", "untrusted-issuer"})


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Finding:
    """One thing worth telling about a target. ``id`` is stable kebab-case, safe to match on in scripts."""

    id: str
    severity: Severity
    title: str
    detail: str = ""
    fix: str | None = None


@dataclass(frozen=True)
class CertificateInfo:
    """The facts about a server certificate that a reader acts on."""

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
        """Describe ``cert``."""
        key = cert.public_key()
        key_type, key_size = _key_facts(key)
        try:
            hash_alg = cert.signature_hash_algorithm
            sig_hash = hash_alg.name if hash_alg is not None else None
        except Exception:  # an unsupported algorithm is a fact to report, not a crash
            sig_hash = None
        oid = cert.signature_algorithm_oid
        digest = cert.fingerprint(hashes.SHA256()).hex().upper()
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=tuple(_san_strings(cert)),
            key_type=key_type,
            key_size=key_size,
            signature_algorithm=getattr(oid, "_name", None) or oid.dotted_string,
            signature_hash=sig_hash,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            self_signed=_is_self_signed(cert),
            serial=format(cert.serial_number, "X"),
            sha256=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
        )


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
    chain_complete: bool = False
    version_attempts: tuple[tlsio.VersionAttempt, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------- certificate facts


def _key_facts(key: Any) -> tuple[str, int | None]:
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


def _san_strings(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    out: list[str] = []
    for gn in ext.value:
        if isinstance(gn, x509.DNSName):
            out.append(f"DNS:{gn.value}")
        elif isinstance(gn, x509.IPAddress):
            out.append(f"IP:{gn.value}")
        elif isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"URI:{gn.value}")
    return out


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # wrong signature, unsupported algorithm: not provably self-signed
        return False
    return True


def _load_chain(ders: Sequence[bytes]) -> tuple[list[x509.Certificate], str | None]:
    certs: list[x509.Certificate] = []
    for der in ders:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            return certs, f"unparseable certificate in the chain: {exc}"
    return certs, None


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
    except (ValueError, TypeError) as exc:
        return False, f"certificate chain could not be evaluated: {exc}"
    return True, "chain verifies against the CA given"


# --------------------------------------------------------------------------------------------- aggregation


_FIX_TLS_ONLY = "allow only hostssl lines in pg_hba.conf (pgbatten apply), then reload"
_FIX_OLD_TLS = "set ssl_min_protocol_version = 'TLSv1.2' in postgresql.conf, then reload"


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
                _FIX_TLS_ONLY,
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
    renew = "issue a new server certificate (pgbatten issue) and reload"
    if now > info.not_after:
        out.append(
            Finding(
                "cert-expired", "high", "Server certificate has expired", f"expired {info.not_after}", renew
            )
        )
    elif now < info.not_before:
        out.append(
            Finding(
                "cert-not-yet-valid", "high", "Server certificate is not yet valid", f"from {info.not_before}"
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
                renew,
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
                "issue the server certificate from a CA (pgbatten issue)",
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
                    f"reissue the certificate with {v.host!r} as a subjectAltName",
                )
            )
        if ca_given and v.trusted is False:
            out.append(
                Finding(
                    "untrusted-issuer",
                    "high",
                    "Certificate does not chain to the CA given",
                    v.trust_reason,
                    "install a certificate issued by that CA, or check the --ca file",
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
                "issue a new key and certificate",
            )
        )
    if info.signature_hash in WEAK_HASHES:
        out.append(
            Finding(
                "weak-signature",
                "high",
                f"Certificate signed with {info.signature_hash}",
                info.signature_algorithm,
                "reissue the certificate with a SHA-256 or stronger signature",
            )
        )
    return out


def _tls_findings(scan: tlsio.TlsScan) -> list[Finding]:
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
            Finding("tls-not-supported", "critical", "Server does not offer TLS", resp.detail, "set ssl = on")
        )
        return out
    accepted = set(scan.accepted_versions)
    if resp is not None and resp.answer is wire.SslAnswer.ACCEPTED and not accepted:
        detail = (
            scan.stalled or "; ".join(f"{a.version}: {a.detail}" for a in scan.attempts) or "no handshake"
        )
        out.append(
            Finding(
                "tls-handshake-failed",
                "critical",
                "Server says it accepts TLS, but no handshake succeeded",
                detail,
            )
        )
    elif scan.stalled:
        out.append(
            Finding("tls-scan-incomplete", "low", "Not every TLS version could be tried", scan.stalled)
        )
    if "TLSv1" in accepted:
        out.append(Finding("tls10-accepted", "high", "TLS 1.0 is accepted", "", _FIX_OLD_TLS))
    if "TLSv1.1" in accepted:
        out.append(Finding("tls11-accepted", "medium", "TLS 1.1 is accepted", "", _FIX_OLD_TLS))
    if accepted and "TLSv1.3" not in accepted:
        out.append(
            Finding(
                "tls13-not-supported",
                "low",
                "TLS 1.3 is not accepted",
                "",
                "PostgreSQL >= 12 with OpenSSL >= 1.1.1 supports it",
            )
        )
    for a in scan.attempts:
        if a.status is tlsio.VersionStatus.NOT_TESTABLE:
            out.append(Finding("version-not-testable", "info", f"{a.version} could not be tried", a.detail))
    return out


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
        and verify_full_ok is True
        and not any(f.severity in ("critical", "high", "medium") for f in found)
    ):
        result = "A+"
    return result


def aggregate(
    target: wire.Target,
    scan: tlsio.TlsScan,
    plaintext: tlsio.PlaintextResult | None,
    *,
    ca: Sequence[x509.Certificate] | None,
    now: dt.datetime,
) -> CheckResult:
    """Turn raw observations into a :class:`CheckResult`. Pure: no I/O."""
    connections = scan.connections + (1 if plaintext is not None else 0)
    findings: list[Finding] = []
    if scan.unreachable is not None:
        return CheckResult(
            target, False, None, False, (), None, None, (), (), NOT_GRADED, connections, scan.unreachable
        )
    resp = scan.ssl_response
    if resp is not None and resp.answer is wire.SslAnswer.UNEXPECTED:
        findings.append(Finding("not-postgresql", "high", "Target is not a PostgreSQL server", resp.detail))
        return CheckResult(
            target,
            True,
            None,
            False,
            (),
            None,
            None,
            (),
            tuple(findings),
            NOT_GRADED,
            connections,
            resp.detail,
        )
    findings += _tls_findings(scan)
    findings += _plaintext_findings(plaintext)

    cert_info: CertificateInfo | None = None
    verify: list[VerifyFull] = []
    error: str | None = None
    best = scan.best
    if best is not None:
        chain, load_problem = _load_chain(best.chain)
        if load_problem is not None:
            error = load_problem
        if chain:
            leaf = chain[0]
            cert_info = CertificateInfo.from_certificate(leaf)
            match: HostMatch = hostname_matches(leaf, target.host)
            if ca:
                trusted, trust_reason = chain_trusted(chain, ca, now)
                if not trusted and not best.full_chain:
                    trust_reason += " (only the leaf certificate could be read from this connection)"
                trusted_opt: bool | None = trusted
            else:
                trusted_opt, trust_reason = None, "no --ca given, chain not checked"
            verify.append(VerifyFull(target.host, match.matched, match.reason, trusted_opt, trust_reason))
            findings += _certificate_findings(cert_info, verify, bool(ca), now)
        elif error is None:
            error = "the server sent no certificate"

    plaintext_accepted = plaintext.verdict.accepted if plaintext and plaintext.verdict else None
    protocols = tuple(scan.accepted_versions)
    findings.sort(key=lambda f: (SEVERITY_ORDER.index(f.severity), f.id))
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
        chain_complete=best.full_chain if best else False,
        version_attempts=scan.attempts,
    )


# ------------------------------------------------------------------------------------- I/O entry point


def load_ca_file(path: Path | str) -> list[x509.Certificate]:
    """The certificates of a PEM file given as ``--ca`` (a bundle may hold several, intermediates too)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FileProblem(path, exc.strerror or str(exc)) from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise FileProblem(path, f"not a PEM certificate file: {exc}") from exc
    return certs


def check_target(
    target: wire.Target | str,
    *,
    ca: Sequence[x509.Certificate] | None = None,
    timeout: float = 5.0,
    now: dt.datetime | None = None,
) -> CheckResult:
    """Probe one target over the network and grade it. Never raises for network trouble.

    ``target`` may be a :class:`wire.Target` or ``"host[:port]"`` text (a :class:`UsageError` if invalid).
    ``timeout`` bounds each connection. Connections: 1 for TLS 1.2/1.3 plus 1 per older version tried, plus 1
    plaintext login attempt; fewer when the answer is already known (no TLS, unreachable, not PostgreSQL).
    """
    if isinstance(target, str):
        target = wire.parse_target(target)
    scan = tlsio.tls_versions_accepted(target.host, target.port, timeout=timeout)
    plaintext: tlsio.PlaintextResult | None = None
    resp = scan.ssl_response
    if scan.unreachable is None and not (resp is not None and resp.answer is wire.SslAnswer.UNEXPECTED):
        plaintext = tlsio.probe_plaintext(target.host, target.port, timeout)
    when = now if now is not None else dt.datetime.now(dt.UTC)
    return aggregate(target, scan, plaintext, ca=ca, now=when)


def check_targets(
    targets: Iterable[wire.Target | str],
    *,
    ca: Sequence[x509.Certificate] | None = None,
    timeout: float = 5.0,
    now: dt.datetime | None = None,
) -> list[CheckResult]:
    """:func:`check_target` for each target, one after another (gentle on shared servers)."""
    return [check_target(t, ca=ca, timeout=timeout, now=now) for t in targets]


# --------------------------------------------------------------------------------------------- output


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def result_to_json(result: CheckResult) -> dict[str, Any]:
    """A JSON-ready dict; key names are a stable interface."""
    cert = result.certificate
    return {
        "target": str(result.target),
        "host": result.target.host,
        "port": result.target.port,
        "reachable": result.reachable,
        "plaintext_accepted": result.plaintext_accepted,
        "tls_supported": result.tls_supported,
        "protocols": list(result.protocols),
        "version_attempts": [
            {"version": a.version, "status": str(a.status), "detail": a.detail}
            for a in result.version_attempts
        ],
        "cipher": result.cipher,
        "certificate": None
        if cert is None
        else {
            "subject": cert.subject,
            "issuer": cert.issuer,
            "sans": list(cert.sans),
            "key_type": cert.key_type,
            "key_size": cert.key_size,
            "signature_algorithm": cert.signature_algorithm,
            "not_before": _iso(cert.not_before),
            "not_after": _iso(cert.not_after),
            "self_signed": cert.self_signed,
            "serial": cert.serial,
            "sha256": cert.sha256,
        },
        "chain_complete": result.chain_complete,
        "verify_full": {v.host: {"ok": v.ok, "why": v.why} for v in result.verify_full},
        "findings": [
            {"id": f.id, "severity": f.severity, "title": f.title, "detail": f.detail, "fix": f.fix}
            for f in result.findings
        ],
        "grade": result.grade,
        "connections_used": result.connections_used,
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
    "GRADE_RULES",
    "CertificateInfo",
    "CheckResult",
    "Finding",
    "VerifyFull",
    "aggregate",
    "chain_trusted",
    "check_target",
    "check_targets",
    "exit_status",
    "grade",
    "load_ca_file",
    "result_to_json",
]
