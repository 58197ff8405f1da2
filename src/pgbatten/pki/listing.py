"""``pgbatten cert list`` as data: every issued certificate, the CRL's state, and what needs doing.

One read of the inventory, one of the CRL; the warnings carry the commands that fix them, with real paths.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from pgbatten.errors import FileProblem, PKIError
from pgbatten.pki import hints
from pgbatten.pki.certbuild import utc_now
from pgbatten.pki.records import InventoryEntry
from pgbatten.pki.revocation import crl_cutoff
from pgbatten.pki.served import still_installed
from pgbatten.pki.store import CAStore
from pgbatten.timestamps import iso

# `cert list` warns this long before a certificate ends; the CRL gets a shorter window since it is
# re-signed far more often (default validity 30 days) and its end locks out every client certificate.
EXPIRY_WARNING = dt.timedelta(days=30)
CRL_WARNING = dt.timedelta(days=7)

__all__ = [
    "CRL_WARNING",
    "EXPIRY_WARNING",
    "CrlSummary",
    "InventoryListing",
    "Notice",
    "entry_status",
    "inventory_warnings",
    "list_inventory",
]


def _hex(serial: int) -> str:
    return f"{serial:#x}"


@dataclass(frozen=True)
class CrlSummary:
    """The CRL in the CA directory: how big it is and until when PostgreSQL accepts it."""

    path: Path
    number: int | None
    entries: int
    size_bytes: int
    last_update: dt.datetime
    next_update: dt.datetime | None

    @classmethod
    def of(cls, crl: x509.CertificateRevocationList, path: Path, size_bytes: int) -> CrlSummary:
        try:
            number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            number = None
        return cls(
            path=path,
            number=number,
            entries=len(crl),
            size_bytes=size_bytes,
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "number": self.number,
            "entries": self.entries,
            "size_bytes": self.size_bytes,
            "last_update": iso(self.last_update),
            "next_update": iso(self.next_update) if self.next_update is not None else None,
        }


@dataclass(frozen=True)
class Notice:
    """One thing that needs doing. ``code`` is stable (for ``--json`` readers), ``message`` is for people."""

    code: str
    message: str
    serial: int | None = None

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "serial": str(self.serial) if self.serial is not None else None,
        }


def entry_status(entry: InventoryEntry, now: dt.datetime) -> str:
    """``revoked YYYY-MM-DD``, ``expired`` or ``valid, N days left``."""
    if entry.revoked_at is not None:
        return f"revoked {entry.revoked_at:%Y-%m-%d}"
    if entry.not_after <= now:
        return "expired"
    return f"valid, {(entry.not_after - now).days} days left"


def _state(entry: InventoryEntry, now: dt.datetime) -> str:
    if entry.revoked_at is not None:
        return "revoked"
    return "expired" if entry.not_after <= now else "valid"


def inventory_warnings(
    entries: Sequence[InventoryEntry],
    crl_obj: x509.CertificateRevocationList | None,
    now: dt.datetime | None = None,
    *,
    refresh_hint: str = "pgbatten crl refresh",
    installed_revoked: Sequence[InventoryEntry] = (),
    ca_dir: Path | None = None,
) -> list[Notice]:
    """What needs doing soon: certificates about to end, a CRL about to lapse or behind the inventory.

    ``refresh_hint`` is the command that re-signs and installs the CRL (see ``hints.crl_refresh_hint``);
    ``installed_revoked`` the revoked server certificates still installed where the inventory says;
    ``ca_dir`` goes into the commands printed.
    """
    now = utc_now(now)
    warnings: list[Notice] = []
    for entry in installed_revoked:
        assert entry.installed is not None
        where = entry.installed.cert_file
        fix = _renew_hint(entry, ca_dir)
        warnings.append(
            Notice(
                "revoked-still-installed",
                f"server certificate {_hex(entry.serial)} of {entry.name} is revoked but still installed in "
                f"{where}; replace it: {fix}",
                entry.serial,
            )
        )
    for entry in entries:
        if entry.revoked:
            continue
        if entry.not_after <= now:
            warnings.append(
                Notice(
                    "expired",
                    f"{entry.kind} certificate {_hex(entry.serial)} of {entry.name} has expired",
                    entry.serial,
                )
            )
        elif entry.not_after - now < EXPIRY_WARNING:
            days = (entry.not_after - now).days
            renew = _renew_hint(entry, ca_dir)
            warnings.append(
                Notice(
                    "expiring",
                    f"{entry.kind} certificate {_hex(entry.serial)} of {entry.name} ends in {days} days "
                    f"({entry.not_after:%Y-%m-%d}); renew it: {renew}",
                    entry.serial,
                )
            )
    revoked = [e for e in entries if e.revoked_at is not None]
    if crl_obj is None:
        if revoked:
            warnings.append(
                Notice("crl-missing", f"certificates are revoked but no CRL was written; run {refresh_hint}")
            )
        return warnings
    next_update = crl_obj.next_update_utc
    if next_update is not None and next_update <= now:
        warnings.append(
            Notice(
                "crl-lapsed",
                f"the CRL passed its next update on {next_update:%Y-%m-%d %H:%M} UTC: PostgreSQL now refuses "
                f"EVERY client certificate; at once run {refresh_hint}",
            )
        )
    elif next_update is not None and next_update - now < CRL_WARNING:
        warnings.append(
            Notice(
                "crl-expiring",
                f"the CRL's next update is {next_update:%Y-%m-%d %H:%M} UTC; after it PostgreSQL refuses "
                f"every client certificate: before then run {refresh_hint}",
            )
        )
    listed = {r.serial_number for r in crl_obj}
    # A certificate that had ended when the CRL was signed is left out of it on purpose.
    cutoff = crl_cutoff(crl_obj.last_update_utc)
    missing = [e for e in revoked if e.serial not in listed and e.not_after >= cutoff]
    if missing:
        warnings.append(
            Notice(
                "crl-behind",
                f"{len(missing)} revoked certificate(s) are not in the CRL yet; run {refresh_hint}",
            )
        )
    return warnings


def _renew_hint(entry: InventoryEntry, ca_dir: Path | None) -> str:
    """The command that replaces ``entry``'s certificate, as complete as the inventory allows."""
    where = ["--ca-dir", str(ca_dir)] if ca_dir is not None else []
    if entry.kind == "client":
        args = ["cert", "client", entry.name, "--force", *where]
        if entry.bundle is not None:
            b = entry.bundle
            args += ["--out", str(b.directory), "--server-host", b.host, "--port", str(b.port)]
            args += ["--dbname", b.dbname]
        else:
            return hints.command(*args) + " and the server's --port (or its --pgdata or --cluster)"
        return hints.command(*args)
    if entry.installed is not None and entry.installed.cluster is not None:
        return hints.command("secure", *where, *entry.installed.cluster.args())
    return hints.command("secure", *where) + " with the --pgdata or --cluster of the cluster serving it"


@dataclass(frozen=True)
class InventoryListing:
    """Everything ``cert list`` shows."""

    ca_dir: Path
    now: dt.datetime
    entries: tuple[InventoryEntry, ...]
    crl: CrlSummary | None
    warnings: tuple[Notice, ...]
    # Serials of revoked certificates still installed where the inventory says (server certificates).
    installed_revoked: frozenset[int] = frozenset()

    def status(self, entry: InventoryEntry) -> str:
        text = entry_status(entry, self.now)
        return f"{text}, still installed" if entry.serial in self.installed_revoked else text

    def to_json(self) -> dict[str, Any]:
        """The ``cert list --json`` document (schema in the README, ``"schema": "pgbatten.cert-list/1"``)."""
        certificates = []
        for entry in self.entries:
            item = entry.to_json()
            item["status"] = _state(entry, self.now)
            item["installed"] = (
                {
                    "cert_file": str(entry.installed.cert_file),
                    "cluster": entry.installed.cluster.args() if entry.installed.cluster else None,
                    "still_installed": entry.serial in self.installed_revoked or None,
                }
                if entry.installed is not None
                else None
            )
            certificates.append(item)
        return {
            "schema": "pgbatten.cert-list/1",
            "ca_dir": str(self.ca_dir),
            "now": iso(self.now),
            "certificates": certificates,
            "crl": self.crl.to_json() if self.crl is not None else None,
            "warnings": [w.to_json() for w in self.warnings],
        }


def list_inventory(store: CAStore, now: dt.datetime | None = None) -> InventoryListing:
    """Read the inventory and the CRL once and say what needs doing."""
    now = utc_now(now)
    entries = tuple(store.entries())
    crl_obj, size = _read_crl(store)
    installed_revoked = [e for e in entries if e.revoked and e.installed is not None and still_installed(e)]
    warnings = inventory_warnings(
        entries,
        crl_obj,
        now,
        refresh_hint=hints.crl_refresh_hint(store, hints.known_clusters(store, entries)),
        installed_revoked=installed_revoked,
        ca_dir=store.path,
    )
    return InventoryListing(
        ca_dir=store.path,
        now=now,
        entries=entries,
        crl=CrlSummary.of(crl_obj, store.crl_path, size) if crl_obj is not None else None,
        warnings=tuple(warnings),
        installed_revoked=frozenset(e.serial for e in installed_revoked),
    )


def _read_crl(store: CAStore) -> tuple[x509.CertificateRevocationList | None, int]:
    try:
        data = store.crl_path.read_bytes()
    except FileNotFoundError:
        return None, 0
    except OSError as exc:
        raise FileProblem(store.crl_path, f"cannot read: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_crl(data), len(data)
    except ValueError as exc:
        raise PKIError(f"{store.crl_path} is not a PEM CRL") from exc
