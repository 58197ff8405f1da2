"""What ``pgbatten cert`` and ``pgbatten crl`` do to a CA directory, as a library that returns results.

Issuing a client bundle (validate everything, issue, record, write, forget again if the bundle cannot be
written), revoking (which certificates a name or serial means), re-signing the CRL, and what an inventory
listing should warn about. The CLI parses arguments and prints these results; installing a CRL on a cluster
is ``pgbatten.secure.crl``'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pgbatten.errors import FileProblem, PgBattenError, PKIError, UsageError
from pgbatten.pki import bundle as bundle_mod
from pgbatten.pki.authority import CertificateAuthority, check_role_name, crl_cutoff
from pgbatten.pki.keys import KeyType
from pgbatten.pki.store import CAStore, InventoryEntry

__all__ = [
    "BundleRequest",
    "CrlResult",
    "IssuedBundle",
    "RevokeResult",
    "default_out_dir",
    "default_server_host",
    "issue_client_bundle",
    "open_store",
    "prepare_client_bundle",
    "refresh_crl",
    "revoke",
    "select_revocation",
]


def open_store(path: Path) -> CAStore:
    """The CA directory at ``path``; ``PKIError`` (saying how to create one) when it holds no CA."""
    store = CAStore(path)
    if not store.exists():
        raise PKIError(f"no CA in {store.path}; run 'pgbatten ca init' (or 'pgbatten secure') first")
    return store


def _hex(serial: int) -> str:
    return f"{serial:#x}"


# -- issuing a client bundle --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleRequest:
    """A client bundle to issue, every field checked: issuing it can only fail on I/O."""

    user: str
    out_dir: Path
    key_type: KeyType
    days: int
    server_host: str
    port: int
    dbname: str
    force: bool
    p12_password: bytes | None = None


def default_out_dir(user: str) -> Path:
    """``./USER``, unless the role name cannot be a directory name (a slash, a leading dot)."""
    if user in (".", "..") or user.startswith(".") or "/" in user or "\\" in user or "\0" in user:
        raise UsageError(f"{user!r} is not usable as a directory name; pass --out DIR")
    return Path(user)


def _refuse_existing(target: Path, force: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        return
    # Even --force replaces only a bundle directory, never a file or a symlink someone put there.
    if not target.is_dir() or target.is_symlink():
        raise FileProblem(target, "exists and is not a directory")
    if not force and any(target.iterdir()):
        raise FileProblem(
            target, "already exists; refusing to overwrite a bundle (use --force to replace it)"
        )


def default_server_host(store: CAStore) -> str:
    """The name the newest server certificate of this CA was issued for, else this machine's name."""
    newest = store.inventory.newest_server()
    if newest is not None:
        return newest.name
    return socket.getfqdn() or "localhost"


def prepare_client_bundle(
    store: CAStore,
    user: str,
    *,
    out_dir: Path | None,
    key_type: KeyType | str,
    days: int,
    server_host: str | None,
    port: int,
    dbname: str,
    force: bool,
    p12_password: bytes | None = None,
) -> BundleRequest:
    """Check every input before the CA key is touched, so a mistake costs nothing."""
    check_role_name(user)
    kind = key_type if isinstance(key_type, KeyType) else KeyType.parse(key_type)
    if days < 1:
        raise UsageError(f"validity must be at least one day, not {days}")
    target = out_dir if out_dir is not None else default_out_dir(user)
    _refuse_existing(target, force)
    host = server_host or default_server_host(store)
    bundle_mod.render_install_md(user, host, port, dbname)  # validates host, port and dbname
    if p12_password is not None and not p12_password:
        raise UsageError("the PKCS#12 password must not be empty")
    return BundleRequest(
        user=user,
        out_dir=target,
        key_type=kind,
        days=days,
        server_host=host,
        port=port,
        dbname=dbname,
        force=force,
        p12_password=p12_password,
    )


@dataclass(frozen=True)
class IssuedBundle:
    """A client certificate recorded in the inventory and written out as a bundle."""

    entry: InventoryEntry
    bundle: bundle_mod.ClientBundle
    # The PKCS#12 password: the one given, or a generated one that must be shown exactly once.
    p12_password: bytes
    password_generated: bool
    # The user's other certificates that stay valid: the new one does not revoke them.
    earlier: tuple[InventoryEntry, ...]


def issue_client_bundle(
    store: CAStore, authority: CertificateAuthority, request: BundleRequest, *, now: dt.datetime | None = None
) -> IssuedBundle:
    """Issue, record, write the bundle; a bundle that cannot be written leaves nothing recorded."""
    issued = authority.issue_client(request.user, key_type=request.key_type, days=request.days, now=now)
    generated = request.p12_password is None
    password = request.p12_password or bundle_mod.generate_password().encode()
    earlier = tuple(store.inventory.valid_clients(request.user))
    # Record before the key leaves this process: an unrecorded certificate could never be revoked, and
    # with --force the old bundle is already gone once write_client_bundle returns.
    entry = store.record(issued, "client", request.user)
    try:
        written = bundle_mod.write_client_bundle(
            request.out_dir,
            issued,
            authority.certificate,
            p12_password=password,
            server_host=request.server_host,
            server_port=request.port,
            dbname=request.dbname,
            force=request.force,
        )
    except BaseException:
        # Nobody holds this certificate's key: drop it from the inventory again.
        with contextlib.suppress(PgBattenError):
            store.forget(issued.serial)
        raise
    return IssuedBundle(
        entry=entry, bundle=written, p12_password=password, password_generated=generated, earlier=earlier
    )


# -- revocation ---------------------------------------------------------------------------------------------


def select_revocation(
    store: CAStore, target: str, *, refresh_hint: str | None = None
) -> list[InventoryEntry]:
    """The certificates ``cert revoke TARGET`` would revoke, or the one-line reason it refuses.

    The rule is ``CAStore.matching``'s: a serial of any kind, a name only for client certificates.
    ``refresh_hint`` is the command that installs the CRL, for a target that is already revoked.
    """
    matches = store.matching(target)
    if not matches:
        servers = [e for e in store.find(target) if e.kind == "server"]
        if servers:
            raise PKIError(
                f"{target!r} is a server certificate; revoke it by serial: "
                f"pgbatten cert revoke {_hex(servers[-1].serial)}"
            )
        raise PKIError(f"no certificate for {target!r} in the CA inventory (see 'pgbatten cert list')")
    if all(e.revoked for e in matches):
        hint = f" install the CRL with '{refresh_hint}'" if refresh_hint else " nothing to do"
        raise PKIError(f"every certificate for {target!r} is already revoked;{hint}")
    return matches


# A proof costs one connection per serial: it tries the newest few revocations.
PROVED_SERIALS = 5


@dataclass(frozen=True)
class CrlResult:
    """A CRL just signed and written to the CA directory."""

    crl: x509.CertificateRevocationList
    path: Path
    # The newest revocations the CRL carries (at most PROVED_SERIALS), oldest first: what a proof tries.
    newest_serials: tuple[int, ...]

    @property
    def entries(self) -> int:
        return len(self.crl)


@dataclass(frozen=True)
class RevokeResult:
    """The certificates revoked and the CRL that now lists them."""

    revoked: tuple[InventoryEntry, ...]
    crl: CrlResult

    @property
    def proof_serials(self) -> tuple[int, ...]:
        """The revoked serials a server must now refuse (certificates that have ended are not in the CRL)."""
        cutoff = crl_cutoff(self.crl.crl.last_update_utc)
        return tuple(e.serial for e in self.revoked if e.not_after >= cutoff)


def revoke(
    store: CAStore,
    authority: CertificateAuthority,
    target: str,
    *,
    crl_days: int = 30,
    now: dt.datetime | None = None,
) -> RevokeResult:
    """Mark ``target``'s certificates revoked and sign the CRL that lists them."""
    revoked = store.revoke(target, now=now)
    return RevokeResult(revoked=tuple(revoked), crl=refresh_crl(store, authority, crl_days=crl_days, now=now))


def refresh_crl(
    store: CAStore, authority: CertificateAuthority, *, crl_days: int = 30, now: dt.datetime | None = None
) -> CrlResult:
    """Sign the CRL anew (next CRL number, next update ``now + crl_days``) and write it to ``crl.pem``."""
    crl = store.write_crl(authority, now=now, days=crl_days)
    newest = store.inventory.newest_revoked(crl_cutoff(crl.last_update_utc), PROVED_SERIALS)
    return CrlResult(crl=crl, path=store.crl_path, newest_serials=tuple(newest))
