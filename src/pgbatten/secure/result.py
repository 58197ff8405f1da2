"""What ``secure`` returns: the preview shown before applying, the outcome, and its stable JSON form.

JSON schema ``pgbatten.secure/1`` (``secure --json``; documented in the README): keys are only ever added,
never renamed or removed, within one schema version.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from pgbatten import libpq
from pgbatten.certfacts import fingerprint_sha256, san_strings
from pgbatten.findings import Finding, finding_to_json
from pgbatten.secure.apply import ApplyResult
from pgbatten.secure.lockout import CertificateNeed
from pgbatten.secure.plan import SecurePlan
from pgbatten.secure.sessions import PlaintextSession
from pgbatten.secure.verify import Proof
from pgbatten.timestamps import iso

JSON_SCHEMA = "pgbatten.secure/1"

Status = Literal["dry-run", "declined", "applied", "unchanged", "repaired"]
"""``applied``: files written and proved; ``unchanged``: nothing to write, proved; ``repaired``: nothing to
write but the files were not in effect, so reloaded and proved; ``declined``: the confirmation said no."""


@dataclass(frozen=True)
class ClientInstructions:
    """What clients need: the CA file, a connection string that works as printed, and certificates."""

    sslrootcert: Path
    conninfo: str
    user: str
    certificates_required: bool = False
    issue_command: str | None = None
    """How to issue a client certificate bundle (``pgbatten cert client ROLE …``), when they are required."""
    direct_conninfo: str | None = None
    """``conninfo`` with ``sslnegotiation=direct``, when the server is PostgreSQL 17+ (needs libpq 17+)."""

    @property
    def psql_command(self) -> str:
        return f"psql {shlex.quote(self.conninfo)}"

    @property
    def direct_psql_command(self) -> str | None:
        return f"psql {shlex.quote(self.direct_conninfo)}" if self.direct_conninfo is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "sslrootcert": str(self.sslrootcert),
            "conninfo": self.conninfo,
            "psql": self.psql_command,
            "user": self.user,
            "certificates_required": self.certificates_required,
            "issue_command": self.issue_command,
            "direct_conninfo": self.direct_conninfo,
        }


def issue_command(role: str, ca_dir: Path) -> str:
    """The command that writes ``role``'s client certificate bundle into ``./ROLE/``, ready to paste."""
    return f"pgbatten cert client {shlex.quote(role)} --ca-dir {shlex.quote(str(ca_dir))}"


def client_instructions(
    *,
    host: str,
    port: int,
    user: str,
    ca_path: Path,
    ca_dir: Path,
    certificates_required: bool,
    major: int = 0,
) -> ClientInstructions:
    """The ``sslmode=verify-full`` connection string clients paste, escaped by libpq's rules.

    With client certificates required it names the bundle ``pgbatten cert client USER`` writes (``./USER``).
    """
    params = {
        "host": host,
        "port": str(port),
        "dbname": "postgres",
        "user": user,
        "sslmode": "verify-full",
        "sslrootcert": str(ca_path),
    }
    command = None
    if certificates_required:
        params["sslcert"] = str(Path(user) / "postgresql.crt")
        params["sslkey"] = str(Path(user) / "postgresql.key")
        command = issue_command(user, ca_dir)
    return ClientInstructions(
        sslrootcert=ca_path,
        conninfo=libpq.conninfo(params),
        user=user,
        certificates_required=certificates_required,
        issue_command=command,
        # PostgreSQL 17 also takes TLS from the first byte: one round trip less for libpq 17+ clients.
        direct_conninfo=libpq.conninfo({**params, "sslnegotiation": "direct"}) if major >= 17 else None,
    )


@dataclass(frozen=True)
class SecurePreview:
    """Everything known before anything is written: what the confirmation shows and ``--dry-run`` prints."""

    cluster: str
    running: bool
    plan: SecurePlan
    ca_dir: Path
    client: ClientInstructions
    new_ca: bool = False
    certificate_needs: tuple[CertificateNeed, ...] = ()
    """With client certificates about to be required: each role that logs in over TCP today."""
    roles_unknown: bool = False
    """True when those roles could not be listed (the server is not running)."""
    addresses: tuple[str, ...] = ()
    unproved: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def lint_remaining(self) -> tuple[Finding, ...]:
        """High and medium lint findings the change does not remove."""
        if not self.plan.changed:
            return ()
        return tuple(f for f in self.plan.lint_after if f.severity in ("critical", "high", "medium"))

    @property
    def missing_certificates(self) -> tuple[str, ...]:
        return tuple(n.role for n in self.certificate_needs if not n.covered)


@dataclass(frozen=True)
class SecureResult:
    """The outcome: the preview, what happened, the proofs, and what to hand to clients."""

    preview: SecurePreview
    status: Status
    outcome: ApplyResult | None = None
    plaintext_sessions: tuple[PlaintextSession, ...] = ()
    ended_sessions: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def plan(self) -> SecurePlan:
        return self.preview.plan

    @property
    def applied(self) -> bool:
        return self.status in ("applied", "unchanged", "repaired")

    @property
    def proofs(self) -> tuple[Proof, ...]:
        return self.outcome.proofs if self.outcome else ()

    @property
    def backups(self) -> tuple[tuple[Path, Path], ...]:
        return self.outcome.backups if self.outcome else ()

    @property
    def client(self) -> ClientInstructions:
        return self.preview.client

    @property
    def ca_cert_path(self) -> Path:
        return self.client.sslrootcert

    @property
    def conninfo(self) -> str:
        return self.client.conninfo

    @property
    def direct_conninfo(self) -> str | None:
        return self.client.direct_conninfo

    def to_json(self) -> dict[str, Any]:
        return result_to_json(self)


def _certificate_json(cert: x509.Certificate, path: Path, issued: bool) -> dict[str, Any]:
    return {
        "path": str(path),
        "issued": issued,
        "subject": cert.subject.rfc4514_string(),
        "sans": list(san_strings(cert)),
        "serial": str(cert.serial_number),
        "not_after": iso(cert.not_valid_after_utc),
        "fingerprint_sha256": fingerprint_sha256(cert),
    }


def result_to_json(result: SecureResult) -> dict[str, Any]:
    """The ``pgbatten.secure/1`` object."""
    preview, plan = result.preview, result.plan
    return {
        "schema": JSON_SCHEMA,
        "cluster": preview.cluster,
        "running": preview.running,
        "status": result.status,
        "changed": plan.changed,
        "applied": result.applied,
        "files": [
            {
                "path": str(c.path),
                "action": "create" if c.is_new else "replace",
                "purpose": c.purpose,
                "mode": f"{c.mode:04o}",
                "secret": c.secret,
            }
            for c in plan.changes
        ],
        "settings": dict(plan.settings),
        "verifies_client_certificates": plan.verifies_clients,
        "certificate": _certificate_json(plan.certificate, plan.cert_path, plan.issued is not None),
        "ca": {
            "dir": str(preview.ca_dir),
            "certificate": str(preview.client.sslrootcert),
            "created": preview.new_ca and result.applied,
        },
        "lint": {
            "before": [finding_to_json(f) for f in plan.lint_before],
            "remaining": [finding_to_json(f) for f in preview.lint_remaining],
        },
        "notes": [*preview.notes, *result.notes],
        "certificate_needs": [
            {
                "role": n.role,
                "certificate": (
                    {
                        "serial": str(n.certificate.serial),
                        "not_after": iso(n.certificate.not_after),
                    }
                    if n.certificate is not None
                    else None
                ),
            }
            for n in preview.certificate_needs
        ],
        "addresses": list(preview.addresses),
        "unproved_addresses": list(preview.unproved),
        "proofs": [{"what": p.what, "ok": p.ok, "detail": p.detail} for p in result.proofs],
        "backups": [{"original": str(o), "backup": str(b)} for o, b in result.backups],
        "plaintext_sessions": [s.to_json() for s in result.plaintext_sessions],
        "ended_sessions": list(result.ended_sessions),
        "client": preview.client.to_json(),
    }
