"""``renew`` as data for one cluster: is its server certificate due, and the exact bytes of every file to
replace (certificate with its chain, key, CA bundle, CRL). Pure.

Renewal replaces file contents in place, at the paths the server already uses: it never edits
postgresql.conf or pg_hba.conf (that is ``secure``'s work), so a reload puts the new files in force and no
session is dropped. The plan fits :func:`pgbatten.secure.apply.apply_plan` like a ``SecurePlan``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import fingerprint_sha256, host_names
from pgbatten.errors import PKIError
from pgbatten.lifecycle.timeline import Validity, format_duration, renewal_due
from pgbatten.pki import IssuedCertificate, KeyType, key_type_of, load_private_key_pem
from pgbatten.pki.trust import Trust
from pgbatten.secure.plan import CA_NAME, CERT_NAME, CRL_NAME, FileChange


@dataclass(frozen=True)
class ServerFiles:
    """What a running cluster uses now (read beforehand): the TLS settings and the bytes of their files."""

    label: str
    cert_path: Path | None
    key_path: Path | None
    ca_path: Path | None = None
    crl_path: Path | None = None
    existing: Mapping[Path, bytes] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    """The path settings as set in the configuration files, proved still in effect after the reload."""
    served_fingerprint: str | None = None
    ssl_on: bool = True
    revoked_serials: frozenset[int] = frozenset()

    def content(self, path: Path | None) -> bytes | None:
        return self.existing.get(path) if path is not None else None


@dataclass(frozen=True)
class RenewRequest:
    """How to renew: the rule for "due" and what to issue."""

    now: dt.datetime
    before: dt.timedelta | None = None
    days: int = 365
    crl: bytes | None = None
    """The CRL file every server should have (all CAs in force), when one is installed."""
    dry: bool = False
    """Decide only: say that a certificate must be issued (``issue_needed``) instead of issuing it."""


@dataclass(frozen=True)
class RenewPlan:
    """The change for one cluster; ``changes`` empty and ``reload`` False when nothing is due."""

    label: str
    changes: tuple[FileChange, ...]
    settings: Mapping[str, str]
    certificate: x509.Certificate | None
    issued: IssuedCertificate | None = None
    hosts: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    reload: bool = False
    """The files are right but the server does not serve them: a reload (and the proofs) finish the job."""
    skipped: str | None = None
    replaced_serial: int | None = None
    issue_needed: bool = False
    """A new certificate is due (set by a ``dry`` request, which issues nothing)."""

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def due(self) -> bool:
        return self.changed or self.reload or self.issue_needed


def _load_chain(data: bytes | None) -> tuple[x509.Certificate, ...]:
    if data is None:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        return ()


def _key_type(data: bytes | None) -> KeyType:
    if data is None:
        return KeyType.ECDSA_P256
    try:
        return key_type_of(load_private_key_pem(data))
    except (PKIError, ValueError, TypeError):
        return KeyType.ECDSA_P256


def server_due(cert: x509.Certificate, files: ServerFiles, trust: Trust, request: RenewRequest) -> list[str]:
    """Why the installed certificate must be re-issued now; empty when it need not be."""
    reasons: list[str] = []
    validity = Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
    if request.now >= validity.end:
        reasons.append(f"it expired on {validity.end:%Y-%m-%d}")
    elif renewal_due(validity, request.now, request.before):
        left = format_duration(validity.remaining(request.now))
        rule = (
            f"less than {format_duration(request.before)}"
            if request.before
            else "less than a third of its life"
        )
        reasons.append(f"{rule} is left ({left}, until {validity.end:%Y-%m-%d})")
    if trust.issued_here(cert) and validity.end > trust.root.not_valid_after_utc:
        reasons.append(
            f"it ends after its CA ({trust.root.not_valid_after_utc:%Y-%m-%d}): no leaf outlives its CA"
        )
    if cert.serial_number in files.revoked_serials:
        reasons.append("it is revoked")
    if trust.issued_by_previous(cert):
        reasons.append("its CA is being retired (CA rotation)")
    return reasons


def plan_server_renewal(files: ServerFiles, trust: Trust, request: RenewRequest) -> RenewPlan:
    """Decide what one cluster needs: a new certificate, a CA bundle, a CRL, a reload, or nothing."""
    empty = RenewPlan(label=files.label, changes=(), settings=files.settings, certificate=None)
    if not files.ssl_on:
        return _skip(empty, "ssl is off; make the cluster TLS-only with pgbatten secure first")
    if files.cert_path is None or files.key_path is None or files.cert_path.name != CERT_NAME:
        return _skip(
            empty, f"its server certificate ({files.cert_path}) is not pgbatten's; renew leaves it alone"
        )
    chain = _load_chain(files.content(files.cert_path))
    if not chain:
        return _skip(empty, f"{files.cert_path} holds no readable certificate; run pgbatten secure")
    current = chain[0]
    if not (trust.issued_here(current) or trust.issued_by_previous(current)):
        return _skip(
            empty,
            f"its server certificate was issued by {current.issuer.rfc4514_string()}, not by this CA;"
            " renew will not swap CAs under clients (use the CA it came from, or pgbatten ca rotate)",
        )
    changes: list[FileChange] = []
    reasons = server_due(current, files, trust, request)
    issued: IssuedCertificate | None = None
    certificate = current
    hosts = host_names(current)
    if reasons and request.dry:
        return RenewPlan(
            label=files.label,
            changes=(),
            settings=files.settings,
            certificate=current,
            hosts=hosts,
            reasons=tuple(reasons),
            issue_needed=True,
        )
    if reasons:
        if not hosts:
            cn = current.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            hosts = (str(cn[0].value),) if cn else ()
        if not hosts:
            return _skip(empty, "its certificate names no host; run pgbatten secure --host NAME")
        subject_cn = current.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        fresh = trust.signer().issue_server(
            hosts,
            common_name=str(subject_cn[0].value) if subject_cn else None,
            key_type=_key_type(files.content(files.key_path)),
            days=request.days,
        )
        issued = IssuedCertificate(certificate=fresh.certificate, key=fresh.key, chain=trust.chain)
        certificate = issued.certificate
        changes.append(_change(files, files.cert_path, issued.cert_pem(), 0o644, purpose="server cert"))
        changes.append(
            _change(files, files.key_path, issued.key_pem(), 0o600, purpose="server key", secret=True)
        )
    elif tuple(chain[1:]) != trust.chain and trust.issued_here(current):
        # During an overlap a leaf of the new CA needs the cross certificate after it, or clients holding
        # only the old root cannot verify it; after the overlap the cross certificate goes.
        wanted = b"".join(_pem(c) for c in (current, *trust.chain))
        changes.append(_change(files, files.cert_path, wanted, 0o644, purpose="server cert"))
        reasons.append(
            "its chain lacks the cross certificate that old-root clients need"
            if trust.chain
            else "it still serves the cross certificate of a finished CA rotation"
        )
    if files.ca_path is not None and files.ca_path.name == CA_NAME:
        wanted = trust.roots_pem()
        if files.content(files.ca_path) != wanted:
            changes.append(_change(files, files.ca_path, wanted, 0o644, purpose="CA cert"))
            reasons.append("ssl_ca_file does not hold every root in force")
    crl_path = files.crl_path if files.crl_path is not None and files.crl_path.name == CRL_NAME else None
    if crl_path is not None and request.crl is not None and files.content(crl_path) != request.crl:
        changes.append(_change(files, crl_path, request.crl, 0o644, purpose="CRL"))
        reasons.append("the installed CRL is not the CA's current one")
    reload = False
    if (
        not changes
        and files.served_fingerprint is not None
        and files.served_fingerprint != fingerprint_sha256(current)
    ):
        reload = True
        reasons.append("the server does not serve the installed certificate (the file never reached it)")
    return RenewPlan(
        label=files.label,
        changes=tuple(changes),
        settings=files.settings,
        certificate=certificate,
        issued=issued,
        hosts=hosts,
        reasons=tuple(reasons),
        reload=reload,
        replaced_serial=current.serial_number if issued is not None else None,
    )


def _pem(cert: x509.Certificate) -> bytes:
    from pgbatten.pki.trust import pem

    return pem(cert)


def _change(
    files: ServerFiles, path: Path, new: bytes, mode: int, *, purpose: str, secret: bool = False
) -> FileChange:
    return FileChange(path, files.content(path), new, mode, secret=secret, purpose=purpose)


def _skip(plan: RenewPlan, why: str) -> RenewPlan:
    return RenewPlan(label=plan.label, changes=(), settings=plan.settings, certificate=None, skipped=why)
