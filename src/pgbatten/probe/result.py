"""What ``pgbatten check`` learned about one target, as a frozen value and as JSON; the exit status.

:class:`CheckResult` is built by :func:`probe.check.aggregate` and graded by :mod:`probe.grading`;
:func:`result_to_json` is the stable ``--json`` schema the README documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pgbatten.certfacts import CertificateInfo
from pgbatten.findings import Finding, finding_to_json
from pgbatten.probe import wire
from pgbatten.probe.tls import VersionAttempt
from pgbatten.timestamps import iso

NOT_GRADED = "-"


@dataclass(frozen=True)
class VerifyFull:
    """Would ``sslmode=verify-full`` succeed for ``host``? ``trusted`` is None when no ``--ca`` was given."""

    host: str
    name_ok: bool
    name_reason: str
    trusted: bool | None
    trust_reason: str
    old_client_name_ok: bool | None = None
    """What libpq before 15 (no IP SANs) decides for the name, when it differs from ``name_ok``."""
    old_client_name_reason: str = ""
    revoked: bool = False
    """The CRLs given revoke the certificate: no CRL-checking client connects."""

    @property
    def old_client_ok(self) -> bool | None:
        """The verdict of a libpq before 15, when its name rule decides otherwise; None when the same."""
        if self.old_client_name_ok is None:
            return None
        if not self.old_client_name_ok or self.trusted is False:
            return False
        return None if self.trusted is None else True

    @property
    def ok(self) -> bool | None:
        """True/False when decidable; None when the name fits but no CA was given to judge the chain."""
        if not self.name_ok or self.trusted is False:
            return False
        return None if self.trusted is None else True

    @property
    def why(self) -> str:
        """One line explaining :attr:`ok`, as libpq reports it: the chain first (OpenSSL refuses it during the
        handshake, before libpq compares names), then the host name."""
        if self.trusted is False:
            return self.trust_reason
        if not self.name_ok:
            return self.name_reason
        return self.trust_reason if self.trusted is None else f"{self.name_reason}; {self.trust_reason}"


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
    version_attempts: tuple[VersionAttempt, ...] = field(default_factory=tuple)
    mode: Literal["quick", "full"] = "quick"
    ciphers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Full audit: accepted IANA suite names per protocol, in the server's order when it enforces one."""
    server_preference: Mapping[str, bool | None] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    chain: tuple[CertificateInfo, ...] = ()
    """Every certificate the server sent, leaf first."""
    chain_in_order: bool | None = None
    direct_ssl: bool | None = None
    buffered_plaintext_processed: bool | None = None
    """Full audit: did the server process plaintext sent with the SSLRequest (CVE-2021-23214)?"""
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


# --------------------------------------------------------------------------------------------- JSON


def _cert_json(cert: CertificateInfo) -> dict[str, Any]:
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "sans": list(cert.sans),
        "key_type": cert.key_type,
        "key_size": cert.key_size,
        "signature_algorithm": cert.signature_algorithm,
        "signature_hash": cert.signature_hash,
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "self_signed": cert.self_signed,
        "serial": cert.serial,
        "sha256": cert.sha256,
    }


def _verify_json(v: VerifyFull) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": v.ok, "why": v.why}
    if v.old_client_name_ok is not None:
        out["libpq_before_15"] = {"ok": v.old_client_ok, "why": v.old_client_name_reason}
    return out


def result_to_json(result: CheckResult) -> dict[str, Any]:
    """A JSON-ready dict; key names are a stable interface."""
    cert = result.certificate
    return {
        "target": str(result.target),
        "host": result.target.host,
        "port": result.target.port,
        "hostaddr": result.target.hostaddr,
        "mode": result.mode,
        "reachable": result.reachable,
        "plaintext_accepted": result.plaintext_accepted,
        "tls_supported": result.tls_supported,
        "protocols": list(result.protocols),
        "ciphers": {p: list(names) for p, names in result.ciphers.items()},
        "server_preference": dict(result.server_preference),
        "groups": list(result.groups),
        "direct_ssl": result.direct_ssl,
        "buffered_plaintext_processed": result.buffered_plaintext_processed,
        "version_attempts": [
            {"version": a.version, "status": str(a.status), "detail": a.detail}
            for a in result.version_attempts
        ],
        "cipher": result.cipher,
        "certificate": None if cert is None else _cert_json(cert),
        "chain": [_cert_json(c) for c in result.chain],
        "chain_complete": result.chain_complete,
        "chain_in_order": result.chain_in_order,
        "verify_full": {v.host: _verify_json(v) for v in result.verify_full},
        "findings": [finding_to_json(f) for f in result.findings],
        "grade": result.grade,
        "connections_used": result.connections_used,
        "connections_by_step": dict(result.connections_by_step),
        "elapsed_seconds": round(result.elapsed, 3),
        "notes": list(result.notes),
        "error": result.error,
    }


# --------------------------------------------------------------------------------------------- exit status

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
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "NOT_GRADED",
    "CheckResult",
    "VerifyFull",
    "exit_status",
    "result_to_json",
]
