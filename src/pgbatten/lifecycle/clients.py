"""Client certificates in ``renew``: which are due, re-issuing them into fresh bundles, and revoking the
replaced ones once their grace period is over.

A re-issued certificate goes into a *new* bundle directory (the same files as ``cert client``: PEM, PKCS#8,
PKCS#12, root.crt, INSTALL.md), so the bundle the user holds keeps working until the new one is handed
out. The certificate it replaces is revoked by a later ``renew`` once ``--grace`` has passed, or by the
operator with ``pgbatten cert revoke SERIAL`` once the new bundle is in use; the pairing is kept in
``renewals.json`` in the CA directory.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgbatten.errors import PKIError, UsageError
from pgbatten.fsutil import atomic_write, read_bytes_or_none
from pgbatten.lifecycle.timeline import Validity, format_duration, renew_at, renewal_due
from pgbatten.pki import CAStore, InventoryEntry, KeyType
from pgbatten.pki.operations import IssuedBundle, issue_client_bundle, prepare_client_bundle
from pgbatten.pki.trust import Trust
from pgbatten.timestamps import iso, parse_iso

RENEWALS_FILE = "renewals.json"
BUNDLES_DIR = "bundles"
PASSWORD_FILE = "postgresql.p12.password"  # noqa: S105 - a file name, not a password
ASSUMED_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClientDue:
    """A user's newest certificate and why it must be re-issued (empty: not due, renews at ``renew_at``)."""

    user: str
    entry: InventoryEntry
    store: CAStore
    reasons: tuple[str, ...]
    renew_at: dt.datetime


@dataclass(frozen=True)
class Replacement:
    """A re-issued client certificate and the one it replaces, revoked after ``revoke_after``."""

    user: str
    old_serial: int
    new_serial: int
    issued_at: dt.datetime
    revoke_after: dt.datetime | None
    bundle: str

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "old_serial": f"{self.old_serial:#x}",
            "new_serial": f"{self.new_serial:#x}",
            "issued_at": iso(self.issued_at),
            "revoke_after": iso(self.revoke_after) if self.revoke_after is not None else None,
            "bundle": self.bundle,
        }

    @classmethod
    def from_json(cls, data: Any) -> Replacement:
        after = data.get("revoke_after")
        return cls(
            user=str(data["user"]),
            old_serial=int(str(data["old_serial"]), 16),
            new_serial=int(str(data["new_serial"]), 16),
            issued_at=parse_iso(data["issued_at"]),
            revoke_after=parse_iso(after) if after is not None else None,
            bundle=str(data.get("bundle", "")),
        )


def _start(entry: InventoryEntry) -> dt.datetime:
    start = getattr(entry, "not_before", None)
    return start if isinstance(start, dt.datetime) else entry.not_after - ASSUMED_LIFETIME


def newest_by_user(entries: Iterable[InventoryEntry]) -> dict[str, InventoryEntry]:
    """Each user's newest unrevoked client certificate (by end of validity)."""
    newest: dict[str, InventoryEntry] = {}
    for entry in entries:
        if entry.kind != "client" or entry.revoked:
            continue
        best = newest.get(entry.name)
        if best is None or entry.not_after > best.not_after:
            newest[entry.name] = entry
    return newest


def clients_due(
    stores: Sequence[tuple[CAStore, bool]],
    users: Sequence[str],
    *,
    every: bool,
    now: dt.datetime,
    before: dt.timedelta | None,
) -> list[ClientDue]:
    """The certificates of ``users`` (or of every user with ``every``), each with why it is due.

    ``stores`` are (store, retiring) pairs: the CA in use, and during a rotation the retiring one, whose
    certificates are all due. A user named who has no certificate is a ``UsageError``.
    """
    newest: dict[str, tuple[InventoryEntry, CAStore, bool]] = {}
    for store, retiring in stores:
        for user, entry in newest_by_user(store.entries()).items():
            known = newest.get(user)
            # A user's certificate of the CA in use beats one of the retiring CA, whatever its end.
            if (
                known is None
                or (known[2] and not retiring)
                or (known[2] == retiring and entry.not_after > known[0].not_after)
            ):
                newest[user] = (entry, store, retiring)
    wanted = sorted(newest) if every else list(dict.fromkeys(users))
    missing = [u for u in wanted if u not in newest]
    if missing:
        raise UsageError(
            f"no valid client certificate for {', '.join(map(repr, missing))}; issue one with "
            f"pgbatten cert client {missing[0]}"
        )
    out: list[ClientDue] = []
    for user in wanted:
        entry, store, retiring = newest[user]
        validity = Validity(_start(entry), entry.not_after)
        reasons: list[str] = []
        if now >= entry.not_after:
            reasons.append(f"it expired on {entry.not_after:%Y-%m-%d}")
        elif renewal_due(validity, now, before):
            reasons.append(f"{format_duration(validity.remaining(now))} of its life is left")
        if retiring:
            reasons.append("its CA is being retired (CA rotation)")
        out.append(ClientDue(user, entry, store, tuple(reasons), renew_at(validity, before)))
    return out


# -- replacement records ------------------------------------------------------------------------------------


def renewals_path(store: CAStore) -> Path:
    return store.path / RENEWALS_FILE


def load_replacements(store: CAStore) -> list[Replacement]:
    data = read_bytes_or_none(renewals_path(store))
    if data is None:
        return []
    try:
        parsed = json.loads(data)
        return [Replacement.from_json(item) for item in parsed.get("replacements", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PKIError(f"{renewals_path(store)} is corrupt: {exc}") from exc


def save_replacements(store: CAStore, items: Sequence[Replacement]) -> None:
    text = json.dumps({"version": 1, "replacements": [r.to_json() for r in items]}, indent=2) + "\n"
    atomic_write(renewals_path(store), text.encode(), mode=0o600)


def revocations_due(items: Sequence[Replacement], revoked: set[int], now: dt.datetime) -> list[Replacement]:
    """Replaced certificates whose grace period is over and that are not revoked yet."""
    return [
        r
        for r in items
        if r.revoke_after is not None and r.revoke_after <= now and r.old_serial not in revoked
    ]


def pending_handover(items: Sequence[Replacement], revoked: set[int]) -> list[Replacement]:
    """Replaced certificates left for the operator to revoke once the new bundle is handed out."""
    return [r for r in items if r.revoke_after is None and r.old_serial not in revoked]


# -- re-issuing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientRenewal:
    """One client certificate re-issued into a fresh bundle."""

    user: str
    old_serial: int
    new_serial: int
    not_after: dt.datetime
    bundle_dir: Path
    password_file: Path | None
    revoke_after: dt.datetime | None


def bundle_dir_for(base: Path, user: str, now: dt.datetime) -> Path:
    """A new directory per renewal, so the bundle the user holds is never overwritten."""
    if user in (".", "..") or user.startswith(".") or any(c in user for c in "/\\\0"):
        raise UsageError(f"{user!r} is not usable as a directory name; renew it with cert client --out DIR")
    return base / f"{user}-{now:%Y%m%dT%H%M%SZ}"


def reissue(
    store: CAStore,
    trust: Trust,
    due: ClientDue,
    *,
    base_dir: Path,
    days: int,
    key_type: KeyType,
    port: int,
    server_host: str | None,
    p12_password: bytes | None,
    grace: dt.timedelta | None,
    now: dt.datetime,
) -> ClientRenewal:
    """Issue ``due.user`` a new certificate from the CA in use into a fresh bundle, and remember what it
    replaces. During a rotation the bundle's root.crt holds both roots, like the servers' ``ssl_ca_file``."""
    target = bundle_dir_for(base_dir, due.user, now)
    request = prepare_client_bundle(
        store,
        due.user,
        out_dir=target,
        key_type=key_type,
        days=days,
        server_host=server_host,
        port=port,
        dbname="postgres",
        force=False,
        p12_password=p12_password,
    )
    issued: IssuedBundle = issue_client_bundle(store, trust.signer(), request)
    if trust.rotating:
        atomic_write(issued.bundle.root_cert_path, trust.roots_pem(), mode=0o644)
    password_file = None
    if issued.password_generated:
        # Beside an unencrypted postgresql.key in a 0700 directory it exposes nothing more, and a scheduled
        # run must not print a secret into the journal.
        password_file = issued.bundle.directory / PASSWORD_FILE
        atomic_write(password_file, issued.p12_password + b"\n", mode=0o600)
    revoke_after = now + grace if grace is not None else None
    items = load_replacements(store)
    items.append(
        Replacement(
            user=due.user,
            old_serial=due.entry.serial,
            new_serial=issued.entry.serial,
            issued_at=now,
            revoke_after=revoke_after,
            bundle=str(issued.bundle.directory),
        )
    )
    save_replacements(store, items)
    return ClientRenewal(
        user=due.user,
        old_serial=due.entry.serial,
        new_serial=issued.entry.serial,
        not_after=issued.entry.not_after,
        bundle_dir=issued.bundle.directory,
        password_file=password_file,
        revoke_after=revoke_after,
    )
