"""``secure`` as data: from what the cluster looks like now to the exact bytes of every file to write.

Pure: no file, socket or process is touched here, so every decision can be tested without PostgreSQL and
the user can be shown the whole change before anything happens.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pgbatten.certfacts import dns_names, fingerprint_sha256, host_names, ip_addresses
from pgbatten.errors import PKIError, UsageError
from pgbatten.findings import Finding
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import pg_ident
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import (
    CACertificate,
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    classify_host,
    key_type_of,
)
from pgbatten.pki.keys import load_private_key_pem, public_key_matches
from pgbatten.secure.hosts import MachineNames, certificate_hosts
from pgbatten.secure.provided import check_provided, keyless_stand_in
from pgbatten.secure.request import ClientAuth, SecureRequest
from pgbatten.secure.settings import tls_settings

__all__ = [
    "CA_NAME",
    "CERT_NAME",
    "CRL_NAME",
    "KEY_NAME",
    "PENDING_KEY_NAME",
    "CaConflict",
    "ClientAuth",
    "ClusterState",
    "FileChange",
    "SecurePlan",
    "SecureRequest",
    "certificate_names",
    "conf_changes",
    "plan_secure",
    "render_diff",
    "requires_client_certificates",
    "reusable_certificate",
]

AnyCA = CertificateAuthority | CACertificate
"""A CA with its key, or (on a server of a fleet) its certificate alone."""

# A certificate closer than this to its end is replaced rather than reused.
RENEW_BEFORE = dt.timedelta(days=30)

CERT_NAME = "pgbatten-server.crt"
KEY_NAME = "pgbatten-server.key"
CA_NAME = "pgbatten-ca.crt"
CRL_NAME = "pgbatten-ca.crl"
PENDING_KEY_NAME = "pgbatten-server.key.pending"
"""A key made by ``pgbatten csr`` for a certificate the CA has yet to sign (the key in use is left alone)."""


@dataclass(frozen=True)
class ClusterState:
    """Everything the planner needs to know about the cluster, read beforehand (see ``secure.facts``)."""

    major: int
    cert_dir: Path
    conf_files: tuple[conf_mod.ConfFile, ...]
    hba: hba_mod.HbaFile
    ident: pg_ident.IdentFile | None
    listen_addresses: str
    machine: MachineNames
    existing: Mapping[Path, bytes] = field(default_factory=dict)
    served: tuple[Path, bytes] | None = None
    """The certificate the server is configured to serve today when it is not pgbatten's (ssl on)."""


@dataclass(frozen=True)
class FileChange:
    """One file to create or replace. ``old`` is None for a new file."""

    path: Path
    old: bytes | None
    new: bytes
    mode: int
    secret: bool = False
    purpose: str = ""

    @property
    def is_new(self) -> bool:
        return self.old is None


@dataclass(frozen=True)
class CaConflict:
    """pgbatten's files in the cluster come from another CA than the one in use."""

    installed: str
    """The other CA: the installed ``pgbatten-ca.crt``'s subject and fingerprint, or the served issuer."""
    installed_fingerprint: str | None
    ours: str
    """The SHA-256 fingerprint of the CA in use."""
    files: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"{' and '.join(self.files)} in the cluster come from another CA ({self.installed}) than the one"
            f" in use (SHA-256 {self.ours}); replacing them breaks every client that verifies the server"
            " with the old root.crt, and every client certificate the old CA issued"
        )


@dataclass(frozen=True)
class SecurePlan:
    """The whole change, ready to show and to apply."""

    changes: tuple[FileChange, ...]
    settings: Mapping[str, str]
    cert_path: Path
    key_path: Path
    ca_path: Path
    certificate: x509.Certificate
    issued: IssuedCertificate | None
    hosts: tuple[str, ...]
    notes: tuple[str, ...] = ()
    lint_before: tuple[Finding, ...] = ()
    lint_after: tuple[Finding, ...] = ()
    verifies_clients: bool = False
    """Whether the server will ask clients for a certificate (``ssl_ca_file`` set)."""
    cert_rules: tuple[hba_mod.HbaRule, ...] = ()
    """The TCP rules of today that will newly require a client certificate (before the change)."""
    ca_conflict: CaConflict | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def written_paths(self) -> tuple[Path, ...]:
        return tuple(c.path for c in self.changes)


def requires_client_certificates(hba: hba_mod.HbaFile) -> bool:
    """Whether a TCP rule asks for a client certificate (``cert``, or ``clientcert=verify-ca|full``)."""
    for rule in hba.rules:
        if not rule.is_tcp or rule.is_reject:
            continue
        if rule.method == "cert" or rule.option("clientcert") in ("verify-ca", "verify-full"):
            return True
    return False


def plan_secure(
    state: ClusterState,
    request: SecureRequest,
    ca: AnyCA,
    *,
    crl: bytes | None = None,
    revoked: Collection[int] = (),
    now: dt.datetime | None = None,
    roots: bytes | None = None,
    also_ours: Sequence[x509.Certificate] = (),
    provided: IssuedCertificate | None = None,
) -> SecurePlan:
    """Decide every file ``secure`` must write to reach the requested state; nothing when it is there.

    ``crl`` is the CA's current CRL (installed when the server verifies client certificates) and
    ``revoked`` the serials the CA has revoked (a revoked server certificate is replaced, never reused).
    During a CA rotation (``pgbatten.lifecycle.rotation``) ``roots`` is what ``pgbatten-ca.crt`` holds
    (both roots) and ``also_ours`` the retiring root, whose files in the cluster are no CA conflict.
    ``provided`` is a certificate the CA signed elsewhere for a key on this server (see ``pgbatten csr``);
    with a ``CACertificate`` (no key here) nothing can be issued, so the installed certificate must stay or
    one must be provided.
    """
    now = now or dt.datetime.now(dt.UTC)
    cert_path = state.cert_dir / CERT_NAME
    key_path = state.cert_dir / KEY_NAME
    ca_path = state.cert_dir / CA_NAME
    hosts = certificate_hosts(state.listen_addresses, request.hosts, state.machine)
    if not hosts:
        raise UsageError("no host name or address for the certificate; pass --host NAME")
    changes: list[FileChange] = []
    notes: list[str] = []
    conflict = ca_conflict(state.existing.get(ca_path), state.existing.get(cert_path), ca, also_ours)
    if conflict is not None and request.replace_ca:
        notes.append(f"--replace-ca: {conflict.describe()}")
    notes.extend(_foreign_certificate_note(state, ca))

    ca_pem = roots or ca.cert_pem()
    certificate, issued = _server_certificate(state, request, ca, hosts, revoked, now, notes, provided)
    if issued is not None and state.existing.get(cert_path) != issued.cert_pem():
        changes.append(
            FileChange(
                cert_path, state.existing.get(cert_path), issued.cert_pem(), 0o644, purpose="server cert"
            )
        )
    if issued is not None and state.existing.get(key_path) != issued.key_pem():
        # PostgreSQL refuses a key file with any group or world access when it is owned by the server user.
        changes.append(
            FileChange(key_path, state.existing.get(key_path), issued.key_pem(), 0o600, True, "server key")
        )
    # Written even when clients are not verified: it says which CA issued the served certificate, which is
    # how a later run notices a CA swap.
    if state.existing.get(ca_path) != ca_pem:
        changes.append(FileChange(ca_path, state.existing.get(ca_path), ca_pem, 0o644, purpose="CA cert"))

    # Each pg_hba.conf is linted once, before its text is rendered, so the lint's index and the file's text
    # are never in memory together (a file of 100,000 rules is big).
    lint_before = tuple(hba_mod.lint(state.hba))
    tls_hba, _ = hba_mod.require_tls(state.hba)
    hba_new, _ = hba_mod.set_client_auth(tls_hba, request.client_auth, request.cert_map)
    verifies = request.verifies_client_certificates or requires_client_certificates(hba_new)
    effective = conf_mod.effective_settings(state.conf_files)
    crl_path = _crl_slot(state, effective, verifies, crl, notes)
    if crl_path is not None and crl is not None and state.existing.get(crl_path) != crl:
        changes.append(FileChange(crl_path, state.existing.get(crl_path), crl, 0o644, purpose="CRL"))
    if not verifies:
        current = effective.get("ssl_ca_file")
        if current is not None and current.value:
            notes.append(
                f"ssl_ca_file was {current.value!r} ({current.path}:{current.lineno}); cleared, since no"
                " rule verifies client certificates: while it is set the server asks every client for a"
                " certificate, and libpq sends ~/.postgresql/postgresql.crt to any server that asks"
            )

    settings = tls_settings(
        major=state.major,
        tls_min=request.tls_min,
        cert_file=cert_path,
        key_file=key_path,
        ca_file=ca_path if verifies else None,
        crl_file=crl_path,
    )
    conf_edits, conf_notes = conf_changes(state.conf_files, settings)
    changes.extend(conf_edits)
    notes.extend(conf_notes)

    lint_after = tuple(hba_mod.lint(hba_new)) if hba_new is not state.hba else lint_before
    old_hba = _encode(hba_mod.render(state.hba))
    new_hba = _encode(hba_mod.render(hba_new))
    if new_hba != old_hba:
        assert state.hba.path is not None
        changes.append(FileChange(state.hba.path, old_hba, new_hba, 0o640, purpose="pg_hba"))
    changes.extend(_ident_changes(state, request))
    if not any(r.is_tcp for r in state.hba.rules):
        notes.append("pg_hba.conf has no TCP rules: only local socket connections are possible")
    return SecurePlan(
        changes=tuple(changes),
        settings=settings,
        cert_path=cert_path,
        key_path=key_path,
        ca_path=ca_path,
        certificate=certificate,
        issued=issued,
        hosts=certificate_names(certificate) or hosts,
        notes=tuple(notes),
        lint_before=lint_before,
        lint_after=lint_after,
        verifies_clients=verifies,
        cert_rules=_newly_certificate_rules(tls_hba, hba_new),
        ca_conflict=conflict,
    )


def _crl_slot(
    state: ClusterState,
    effective: Mapping[str, conf_mod.SettingSource],
    verifies: bool,
    crl: bytes | None,
    notes: list[str],
) -> Path | None:
    """Where the CA's CRL goes, or None: only where client certificates are verified, never over a CRL
    that pgbatten does not manage."""
    if not verifies or crl is None:
        return None
    wanted = state.cert_dir / CRL_NAME
    current = effective.get("ssl_crl_file")
    if current is not None and current.value and current.value != str(wanted):
        notes.append(
            f"ssl_crl_file is {current.value!r} ({current.path}:{current.lineno}), not pgbatten's; left"
            " alone, so the CA's revocations are not installed"
        )
        return None
    return wanted


def _ident_changes(state: ClusterState, request: SecureRequest) -> list[FileChange]:
    if request.cert_map is None or state.ident is None:
        return []
    # Start the map as the identity (CN = role) so that cert logins keep working; the administrator adds
    # the mappings for certificate names that differ from role names below it.
    if any(m.map_name == request.cert_map for m in state.ident.mappings):
        return []
    ident_new, changed = pg_ident.add_mapping(state.ident, request.cert_map, "/^(.*)$", "\\1")
    if not changed:
        return []
    assert state.ident.path is not None
    return [
        FileChange(
            state.ident.path,
            _encode(pg_ident.render(state.ident)),
            _encode(pg_ident.render(ident_new)),
            0o640,
            purpose="pg_ident",
        )
    ]


def _newly_certificate_rules(before: hba_mod.HbaFile, after: hba_mod.HbaFile) -> tuple[hba_mod.HbaRule, ...]:
    """The rules of ``before`` that ``set_client_auth`` rewrote (it edits lines in place, one for one)."""
    if len(before.lines) != len(after.lines):
        return tuple(r for r in before.rules if r.is_tcp and r.method in hba_mod.PASSWORD_METHODS)
    return tuple(
        old
        for old, new in zip(before.lines, after.lines, strict=True)
        if isinstance(old, hba_mod.HbaRule) and old.raw != new.raw
    )


def ca_conflict(
    ca_file: bytes | None,
    cert_file: bytes | None,
    ca: AnyCA,
    also_ours: Sequence[x509.Certificate] = (),
) -> CaConflict | None:
    """Whether ``pgbatten-ca.crt`` or ``pgbatten-server.crt`` in the cluster come from another CA than
    ``ca`` (or a root in ``also_ours``, the one a CA rotation is retiring)."""
    ours = fingerprint_sha256(ca.certificate)
    files: list[str] = []
    installed = installed_fp = None
    installed_ca = _load_certificate(ca_file)
    if installed_ca is not None and installed_ca != ca.certificate and installed_ca not in also_ours:
        installed_fp = fingerprint_sha256(installed_ca)
        installed = f"{installed_ca.subject.rfc4514_string()}, SHA-256 {installed_fp}"
        files.append(CA_NAME)
    served = _load_certificate(cert_file)
    if served is not None and not any(_issued_by(served, c) for c in (ca.certificate, *also_ours)):
        files.append(CERT_NAME)
        if installed is None:
            installed = f"issuer {served.issuer.rfc4514_string()}"
            if installed_ca is not None and _issued_by(served, installed_ca):
                installed_fp = fingerprint_sha256(installed_ca)
    if not files:
        return None
    assert installed is not None
    return CaConflict(installed=installed, installed_fingerprint=installed_fp, ours=ours, files=tuple(files))


def _foreign_certificate_note(state: ClusterState, ca: AnyCA) -> list[str]:
    """A certificate of someone else's that the server serves today is replaced: say so, and what it means."""
    if state.served is None:
        return []
    path, data = state.served
    served = _load_certificate(data)
    if served is None or _issued_by(served, ca.certificate):
        return []
    issuer = served.issuer.rfc4514_string() or "an empty issuer"
    kind = "self-signed" if served.issuer == served.subject else f"issued by {issuer}"
    return [
        f"the server serves {path} today ({kind}); it is replaced by a certificate from the pgbatten CA"
        f" (SHA-256 {fingerprint_sha256(ca.certificate)}): clients that verify the server (verify-ca,"
        " verify-full) against the old one or its CA need the pgbatten CA certificate instead"
    ]


def _load_certificate(data: bytes | None) -> x509.Certificate | None:
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _server_certificate(
    state: ClusterState,
    request: SecureRequest,
    ca: AnyCA,
    hosts: Sequence[str],
    revoked: Collection[int],
    now: dt.datetime,
    notes: list[str],
    provided: IssuedCertificate | None = None,
) -> tuple[x509.Certificate, IssuedCertificate | None]:
    """Install the certificate provided; else reuse the installed one when it still fits; else issue one."""
    if provided is not None:
        return check_provided(provided, ca, hosts, revoked), provided
    cert_pem = state.existing.get(state.cert_dir / CERT_NAME)
    reusable = reusable_certificate(
        cert_pem,
        state.existing.get(state.cert_dir / KEY_NAME),
        ca,
        hosts,
        request.key_type,
        now,
        legacy_ip_sans=request.legacy_ip_sans,
    )
    if reusable is not None and reusable.serial_number in revoked:
        notes.append(
            f"the installed server certificate (serial {reusable.serial_number:#x}) is revoked in the CA"
            " inventory: issuing a new one"
        )
        reusable = None
    if reusable is not None:
        return reusable, None
    if isinstance(ca, CACertificate):
        return keyless_stand_in(request, hosts, now, notes)
    issued = ca.issue_server(
        hosts, key_type=request.key_type, days=request.days, now=now, ip_as_dns=request.legacy_ip_sans
    )
    return issued.certificate, issued


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The SANs of a certificate in order, names and addresses as text, each once.

    A reused certificate may carry names from an earlier ``--host``; the client instructions and the login
    proofs follow what the served certificate really says.
    """
    return tuple(dict.fromkeys(host_names(certificate)))


def _ip_dns_names(certificate: x509.Certificate) -> set[str]:
    """DNS SANs that spell an IP address (what ``--legacy-ip-sans`` adds for libpq before 15)."""
    found = set()
    for name in dns_names(certificate):
        try:
            found.add(str(ipaddress.ip_address(name)))
        except ValueError:
            continue
    return found


def reusable_certificate(
    cert_pem: bytes | None,
    key_pem: bytes | None,
    ca: AnyCA,
    hosts: Sequence[str],
    key_type: KeyType,
    now: dt.datetime,
    *,
    legacy_ip_sans: bool = False,
) -> x509.Certificate | None:
    """The installed certificate if it is ours, covers every host, has its key, and is not about to end.

    With ``legacy_ip_sans`` it must also name each address as a DNS name; without, it must not, so that
    dropping the option takes effect on the next run.
    """
    if cert_pem is None or key_pem is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        certificate.verify_directly_issued_by(ca.certificate)
        key = load_private_key_pem(key_pem)
    except (ValueError, TypeError, PKIError, InvalidSignature):
        return None
    if not public_key_matches(key, certificate) or key_type_of(key) != key_type:
        return None
    if certificate.not_valid_after_utc - RENEW_BEFORE < now:
        return None
    present = set(host_names(certificate))
    if not all(str(classify_host(h)) in present for h in hosts):
        return None
    addresses = {str(ip) for ip in ip_addresses(certificate)}
    as_dns = _ip_dns_names(certificate)
    if legacy_ip_sans and not addresses <= as_dns:
        return None
    if not legacy_ip_sans and as_dns:
        return None
    return certificate


def conf_changes(
    files: Sequence[conf_mod.ConfFile], settings: Mapping[str, str]
) -> tuple[list[FileChange], list[str]]:
    """Set each value in the file whose line PostgreSQL obeys, so no later include silently wins.

    Returns the file changes and a note for each value edited outside the main file.
    """
    effective = conf_mod.effective_settings(files)
    main = files[0]
    notes: list[str] = []
    per_file: dict[Path | None, dict[str, str]] = {}
    for name, value in settings.items():
        source = effective.get(name)
        target = source.path if source is not None else main.path
        per_file.setdefault(target, {})[name] = value
        if source is not None and source.path != main.path:
            notes.append(
                f"{name} is set in {source.path}:{source.lineno}, which overrides {main.path};"
                " editing it there"
            )
    changes = []
    for conf in files:
        wanted = per_file.get(conf.path)
        if not wanted:
            continue
        new, changed = conf_mod.set_values(conf, wanted)
        if changed:
            assert conf.path is not None
            changes.append(
                FileChange(
                    conf.path,
                    _encode(conf_mod.render(conf)),
                    _encode(conf_mod.render(new)),
                    0o600,
                    purpose="settings",
                )
            )
    return changes, notes


def _encode(text: str) -> bytes:
    # The parsers decode with surrogateescape, so bytes that are not UTF-8 survive the round trip.
    return text.encode("utf-8", "surrogateescape")


def render_diff(plan: SecurePlan) -> str:
    """A unified diff of every text file, and a description of each certificate and key file."""
    parts: list[str] = []
    for change in plan.changes:
        if change.secret:
            action = "new file" if change.is_new else "replace"
            parts.append(f"{action} {change.path} (private key, mode {change.mode:04o}; content not shown)\n")
            continue
        if change.purpose in ("server cert", "CA cert", "CRL"):
            action = "new file" if change.is_new else "replace"
            parts.append(f"{action} {change.path} ({describe_pem(change.new)})\n")
            continue
        old = (change.old or b"").decode(errors="replace").splitlines(keepends=True)
        new = change.new.decode(errors="replace").splitlines(keepends=True)
        label = str(change.path)
        diff = difflib.unified_diff(old, new, fromfile=f"a{label}", tofile=f"b{label}")
        parts.append("".join(line if line.endswith("\n") else line + "\n" for line in diff))
    return "".join(parts)


def describe_pem(data: bytes) -> str:
    """One line about a PEM certificate or CRL, for the plan."""
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        try:
            crl = x509.load_pem_x509_crl(data)
        except ValueError:
            return f"{len(data)} bytes"
        return f"CRL, {len(list(crl))} revoked, next update {crl.next_update_utc:%Y-%m-%d}"
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    names = [*dns_names(cert), *(str(ip) for ip in ip_addresses(cert))]
    sans = "; SANs: " + ", ".join(names) if names else ""
    return f"certificate {subject}{sans}; valid until {cert.not_valid_after_utc:%Y-%m-%d}"
