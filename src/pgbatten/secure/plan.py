"""``secure`` as data: from what the cluster looks like now to the exact bytes of every file to write.

Pure: no file, socket or process is touched here, so every decision can be tested without PostgreSQL and
the user can be shown the whole change before anything happens.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pgbatten.certfacts import dns_names, host_names, ip_addresses
from pgbatten.errors import PKIError, UsageError
from pgbatten.findings import Finding
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import pg_ident
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CertificateAuthority, IssuedCertificate, KeyType, classify_host, key_type_of
from pgbatten.pki.keys import load_private_key_pem, public_key_matches
from pgbatten.secure.hosts import MachineNames, certificate_hosts
from pgbatten.secure.settings import TlsMin, tls_settings

ClientAuth = Literal["none", "verify-full", "cert"]

# A certificate closer than this to its end is replaced rather than reused.
RENEW_BEFORE = dt.timedelta(days=30)

CERT_NAME = "pgbatten-server.crt"
KEY_NAME = "pgbatten-server.key"
CA_NAME = "pgbatten-ca.crt"
CRL_NAME = "pgbatten-ca.crl"


@dataclass(frozen=True)
class SecureRequest:
    """What the user asked for."""

    hosts: tuple[str, ...] = ()
    tls_min: TlsMin = "1.2"
    client_auth: ClientAuth = "none"
    cert_map: str | None = None
    key_type: KeyType = KeyType.ECDSA_P256
    days: int = 365

    def __post_init__(self) -> None:
        for host in self.hosts:
            classify_host(host)
        if self.cert_map is not None and self.client_auth != "cert":
            raise UsageError("--cert-map only applies with --client-auth cert")
        if self.cert_map is not None and not self.cert_map.replace("_", "").replace("-", "").isalnum():
            raise UsageError(f"--cert-map wants a simple map name, not {self.cert_map!r}")


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
    crl: bytes | None = None


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

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def plan_secure(
    state: ClusterState,
    request: SecureRequest,
    ca: CertificateAuthority,
    *,
    now: dt.datetime | None = None,
) -> SecurePlan:
    """Decide every file ``secure`` must write to reach the requested state; nothing when it is there."""
    now = now or dt.datetime.now(dt.UTC)
    cert_path = state.cert_dir / CERT_NAME
    key_path = state.cert_dir / KEY_NAME
    ca_path = state.cert_dir / CA_NAME
    crl_path = state.cert_dir / CRL_NAME if state.crl is not None else None
    hosts = certificate_hosts(state.listen_addresses, request.hosts, state.machine)
    if not hosts:
        raise UsageError("no host name or address for the certificate; pass --host NAME")
    changes: list[FileChange] = []
    notes: list[str] = []

    ca_pem = ca.cert_pem()
    certificate, issued = _server_certificate(state, request, ca, hosts, cert_path, key_path, now)
    if issued is not None:
        changes.append(
            FileChange(
                cert_path, state.existing.get(cert_path), issued.cert_pem(), 0o644, purpose="server cert"
            )
        )
        # PostgreSQL refuses a key file with any group or world access when it is owned by the server user.
        changes.append(
            FileChange(key_path, state.existing.get(key_path), issued.key_pem(), 0o600, True, "server key")
        )
    if state.existing.get(ca_path) != ca_pem:
        changes.append(FileChange(ca_path, state.existing.get(ca_path), ca_pem, 0o644, purpose="CA cert"))
    if crl_path is not None and state.crl is not None and state.existing.get(crl_path) != state.crl:
        changes.append(FileChange(crl_path, state.existing.get(crl_path), state.crl, 0o644, purpose="CRL"))

    settings = tls_settings(
        major=state.major,
        tls_min=request.tls_min,
        cert_file=cert_path,
        key_file=key_path,
        ca_file=ca_path,
        crl_file=crl_path,
    )
    changes.extend(_conf_changes(state.conf_files, settings, notes))

    # Each pg_hba.conf is linted once, before its text is rendered, so the lint's index and the file's text
    # are never in memory together (a file of 100,000 rules is big).
    lint_before = tuple(hba_mod.lint(state.hba))
    hba_new, _ = hba_mod.require_tls(state.hba)
    hba_new, _ = hba_mod.set_client_auth(hba_new, request.client_auth, request.cert_map)
    lint_after = tuple(hba_mod.lint(hba_new)) if hba_new is not state.hba else lint_before
    old_hba = _encode(hba_mod.render(state.hba))
    new_hba = _encode(hba_mod.render(hba_new))
    if new_hba != old_hba:
        assert state.hba.path is not None
        changes.append(FileChange(state.hba.path, old_hba, new_hba, 0o640, purpose="pg_hba"))
    if request.cert_map is not None and state.ident is not None:
        # Start the map as the identity (CN = role) so that cert logins keep working; the administrator adds
        # the mappings for certificate names that differ from role names below it.
        has_map = any(m.map_name == request.cert_map for m in state.ident.mappings)
        ident_new, ident_changed = (
            (state.ident, False)
            if has_map
            else pg_ident.add_mapping(state.ident, request.cert_map, "/^(.*)$", "\\1")
        )
        if ident_changed:
            assert state.ident.path is not None
            changes.append(
                FileChange(
                    state.ident.path,
                    _encode(pg_ident.render(state.ident)),
                    _encode(pg_ident.render(ident_new)),
                    0o640,
                    purpose="pg_ident",
                )
            )
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
    )


def _server_certificate(
    state: ClusterState,
    request: SecureRequest,
    ca: CertificateAuthority,
    hosts: Sequence[str],
    cert_path: Path,
    key_path: Path,
    now: dt.datetime,
) -> tuple[x509.Certificate, IssuedCertificate | None]:
    """Reuse the installed certificate when it still fits; else issue a new one."""
    reusable = reusable_certificate(
        state.existing.get(cert_path), state.existing.get(key_path), ca, hosts, request.key_type, now
    )
    if reusable is not None:
        return reusable, None
    issued = ca.issue_server(hosts, key_type=request.key_type, days=request.days, now=now)
    return issued.certificate, issued


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The SANs of a certificate in order, names and addresses as text.

    A reused certificate may carry names from an earlier ``--host``; the client instructions and the login
    proofs follow what the served certificate really says.
    """
    return host_names(certificate)


def reusable_certificate(
    cert_pem: bytes | None,
    key_pem: bytes | None,
    ca: CertificateAuthority,
    hosts: Sequence[str],
    key_type: KeyType,
    now: dt.datetime,
) -> x509.Certificate | None:
    """The installed certificate if it is ours, covers every host, has its key, and is not about to end."""
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
    return certificate


def _conf_changes(
    files: Sequence[conf_mod.ConfFile], settings: Mapping[str, str], notes: list[str]
) -> list[FileChange]:
    """Set each value in the file whose line PostgreSQL obeys, so no later include silently wins."""
    effective = conf_mod.effective_settings(files)
    main = files[0]
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
    return changes


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
