"""Revoking and re-signing, put in force: ``cert revoke`` and ``crl refresh`` as library calls.

Each run holds the CA directory's lock from the decision to the last proof, so a concurrent ``secure``,
``renew`` or revocation cannot sign a CRL in between or install one computed before this revocation. Every
refusal comes before the inventory changes (``select_revocation``, then ``preflight``); once the CA side is
done, a failure to install on the cluster says so in its one line. The CLI only prints what these return;
``progress`` is called at the point where the CA side is done and the cluster's side begins, so that the
printed order stays the order of events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgbatten.errors import PgBattenError

if TYPE_CHECKING:
    from pgbatten.cluster.discover import Cluster
    from pgbatten.lifecycle.sessions import SessionsEnded
    from pgbatten.pki import CAStore, CertificateAuthority, InventoryEntry
    from pgbatten.pki.listing import CrlSummary
    from pgbatten.pki.served import ClusterView
    from pgbatten.secure.verify import Proof

__all__ = ["CrlInstalled", "RefreshRun", "RevokeRun", "refresh_and_install", "revoke_and_install"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class CrlInstalled:
    """The CRL put in force on one cluster by reload, and what proved it."""

    label: str
    changed: bool
    crl_file: Path
    proofs: tuple[Proof, ...]
    backups: tuple[tuple[Path, Path], ...]
    sessions: SessionsEnded | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "label": self.label,
            "changed": self.changed,
            "crl_file": str(self.crl_file),
            "proofs": [{"what": p.what, "ok": p.ok, "detail": p.detail} for p in self.proofs],
            "backups": [{"original": str(o), "backup": str(b)} for o, b in self.backups],
        }
        if self.sessions is not None:
            doc["sessions"] = self.sessions.to_json()
        return doc


@dataclass(frozen=True)
class RevokeRun:
    """What ``cert revoke`` did: the certificates revoked, the CRL signed, and the cluster's side."""

    revoked: tuple[InventoryEntry, ...]
    crl: CrlSummary
    view: ClusterView | None
    installed: CrlInstalled | None
    # Server certificates revoked (by --allow-served) that a cluster still serves, with where it serves them.
    still_served: tuple[tuple[InventoryEntry, str], ...]


@dataclass(frozen=True)
class RefreshRun:
    """What ``crl refresh`` did: the CRL re-signed, and the cluster's side."""

    crl: CrlSummary
    view: ClusterView | None
    installed: CrlInstalled | None


def revoke_and_install(
    store: CAStore,
    target: str,
    *,
    passphrase: bytes | None,
    cluster: Cluster | None,
    crl_days: int,
    timeout: float,
    allow_served: bool = False,
    keep_sessions: bool = False,
    progress: Callable[[tuple[InventoryEntry, ...], CrlSummary], None] | None = None,
    log: Log | None = None,
) -> RevokeRun:
    """Revoke ``target`` (a user's certificates, or one serial), sign the CRL, and with a ``cluster`` put
    it in force by reload, prove the revoked serials are refused, and end the sessions they opened."""
    from pgbatten.pki import hints, operations
    from pgbatten.pki.served import cluster_view, remember_served, served_certificates

    with store.lock():
        view = cluster_view(cluster, store)
        served = served_certificates(store, view)
        operations.select_revocation(
            store,
            target,
            refresh_hint=hints.crl_refresh(store, view.ref) if view is not None else None,
            served=served,
            allow_served=allow_served,
        )
        authority = store.load(passphrase)
        if cluster is not None:
            from pgbatten.secure.crl import preflight

            preflight(cluster, authority)  # refuse before the inventory changes
        result = operations.revoke(store, authority, target, crl_days=crl_days)
        remember_served(store, view)
        revoked, summary = tuple(result.revoked), result.crl.summary()
        if progress is not None:
            progress(revoked, summary)
        installed = None
        if cluster is not None:
            installed = _install(
                cluster, store, authority, list(result.proof_serials), timeout, "revoked", log
            )
            # The CRL is in force now: a client whose session is ended cannot come back with the certificate.
            from pgbatten.lifecycle.sessions import end_sessions

            sessions = end_sessions(
                cluster.sql(),
                [(e.serial, authority.certificate.subject) for e in result.revoked],
                keep=keep_sessions,
            )
            installed = replace(installed, sessions=sessions)
        return RevokeRun(
            revoked=revoked,
            crl=summary,
            view=view,
            installed=installed,
            still_served=tuple((e, served[e.serial]) for e in revoked if e.serial in served),
        )


def refresh_and_install(
    store: CAStore,
    *,
    passphrase: bytes | None,
    cluster: Cluster | None,
    crl_days: int,
    timeout: float,
    progress: Callable[[CrlSummary], None] | None = None,
    log: Log | None = None,
) -> RefreshRun:
    """Re-sign the CRL with a new next update and, with a ``cluster``, put it in force by reload."""
    from pgbatten.pki.operations import refresh_crl
    from pgbatten.pki.served import cluster_view, remember_served

    # Held from signing to the last proof, as a revocation holds it.
    with store.lock():
        authority = store.load(passphrase)
        view = cluster_view(cluster, store)
        if cluster is not None:
            from pgbatten.secure.crl import preflight

            preflight(cluster, authority)
        result = refresh_crl(store, authority, crl_days=crl_days)
        remember_served(store, view)
        summary = result.summary()
        if progress is not None:
            progress(summary)
        installed = None
        if cluster is not None:
            # Prove with the newest revocations of certificates that could still be presented.
            installed = _install(
                cluster, store, authority, list(result.newest_serials), timeout, "refreshed", log
            )
        return RefreshRun(crl=summary, view=view, installed=installed)


def _install(
    cluster: Cluster,
    store: CAStore,
    authority: CertificateAuthority,
    serials: list[int],
    timeout: float,
    after: str,
    log: Log | None,
) -> CrlInstalled:
    from pgbatten.secure.crl import install_crl

    try:
        plan, outcome = install_crl(
            cluster, store, authority, refuse=serials, log=log or (lambda _m: None), timeout=timeout
        )
    except PgBattenError as exc:
        # Keep it one line, but say what did happen: the CA side is done, only the server lags.
        exc.message = f"{exc.message} (the CA inventory and {store.crl_path} are {after}; the cluster is not)"
        raise
    return CrlInstalled(
        label=cluster.label,
        changed=plan.changed,
        crl_file=plan.crl_path,
        proofs=tuple(outcome.proofs),
        backups=tuple(outcome.backups),
    )
