"""``secure`` as data: from what the cluster looks like now to the exact bytes of every file to write.

Pure: no file, socket or process is touched here, so every decision can be tested without PostgreSQL and
the user can be shown the whole change before anything happens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from pgbatten.errors import UsageError
from pgbatten.findings import Finding
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import pg_ident
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import IssuedCertificate
from pgbatten.secure.changes import FileChange, describe_pem, hba_kept_lines, iter_diff
from pgbatten.secure.hosts import MachineNames, certificate_hosts
from pgbatten.secure.names import CA_NAME, CERT_NAME, CRL_NAME, KEY_NAME, PENDING_KEY_NAME
from pgbatten.secure.request import ClientAuth, SecureRequest
from pgbatten.secure.servercert import (
    RENEW_BEFORE,
    AnyCA,
    CaConflict,
    ca_conflict,
    certificate_names,
    foreign_certificate_note,
    reusable_certificate,
    server_certificate,
)
from pgbatten.secure.settings import tls_settings

# The file names, the certificate decisions and the diff used to live here: importable from here still.
__all__ = [
    "CA_NAME",
    "CERT_NAME",
    "CRL_NAME",
    "KEY_NAME",
    "PENDING_KEY_NAME",
    "RENEW_BEFORE",
    "AnyCA",
    "CaConflict",
    "ClientAuth",
    "ClusterState",
    "FileChange",
    "SecurePlan",
    "SecureRequest",
    "ca_conflict",
    "certificate_names",
    "conf_changes",
    "describe_pem",
    "plan_secure",
    "render_diff",
    "requires_client_certificates",
    "reusable_certificate",
]


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
    notes.extend(foreign_certificate_note(state.served, ca))

    ca_pem = roots or ca.cert_pem()
    installed = (state.existing.get(cert_path), state.existing.get(key_path))
    certificate, issued = server_certificate(installed, request, ca, hosts, revoked, now, notes, provided)
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
    to_tls = hba_mod.require_tls_edit(state.hba)
    hba_edit = to_tls.then(hba_mod.client_auth_edit(to_tls.after, request.client_auth, request.cert_map))
    tls_hba, hba_new = to_tls.after, hba_edit.after
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
        kept = hba_kept_lines(hba_edit)
        changes.append(FileChange(state.hba.path, old_hba, new_hba, 0o640, purpose="pg_hba", kept=kept))
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
    return "".join(iter_diff(plan.changes))
