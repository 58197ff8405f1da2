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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from pgbatten.errors import FileProblem, PgBattenError, PKIError, UsageError
from pgbatten.pki import bundle as bundle_mod
from pgbatten.pki.authority import CertificateAuthority
from pgbatten.pki.certbuild import check_role_name
from pgbatten.pki.keys import KeyType
from pgbatten.pki.listing import CrlSummary
from pgbatten.pki.revocation import crl_cutoff
from pgbatten.pki.served import ClusterView
from pgbatten.pki.store import BundleRecord, CAStore, InventoryEntry

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
    # What the named server will not do with this certificate (see ClusterView.client_certificate_warnings).
    warnings: tuple[str, ...] = ()
    direct_ssl: bool = False
    """Whether INSTALL.md offers ``sslnegotiation=direct``: the named cluster is PostgreSQL 17 or later."""


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
    port: int | None,
    dbname: str,
    force: bool,
    p12_password: bytes | None = None,
    cluster: ClusterView | None = None,
) -> BundleRequest:
    """Check every input before the CA key is touched, so a mistake costs nothing.

    With ``cluster`` (``--pgdata``/``--cluster``) the server's name comes from the certificate it serves
    and the port from where it listens; without one the port must be given: a guessed port would write a
    bundle whose INSTALL.md connects nowhere.
    """
    check_role_name(user)
    kind = key_type if isinstance(key_type, KeyType) else KeyType.parse(key_type)
    if days < 1:
        raise UsageError(f"validity must be at least one day, not {days}")
    target = out_dir if out_dir is not None else default_out_dir(user)
    _refuse_existing(target, force)
    if port is None:
        if cluster is None:
            raise UsageError(
                "which port does the server listen on? give --port PORT, or --pgdata/--cluster to take the "
                "host and port from the cluster (pgbatten does not guess)"
            )
        port = cluster.port
    host = (
        server_host or (cluster.server_host() if cluster is not None else None) or default_server_host(store)
    )
    bundle_mod.render_install_md(user, host, port, dbname)  # validates host, port and dbname
    if p12_password is not None and not p12_password:
        raise UsageError("the PKCS#12 password must not be empty")
    warnings: list[str] = []
    if cluster is not None:
        warnings += cluster.client_certificate_warnings(user)
        if cluster.served is None:
            warnings.append(f"{cluster.label} serves no readable certificate ({cluster.cert_file})")
        elif not cluster.names(host):
            warnings.append(
                f"the certificate {cluster.label} serves does not name {host}: sslmode=verify-full "
                f"connections to {host} will fail"
            )
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
        warnings=tuple(warnings),
        # Known only for a named cluster: offering it for a server older than 17 would break the client.
        direct_ssl=cluster is not None and cluster.major is not None and cluster.major >= 17,
    )


@dataclass(frozen=True)
class IssuedBundle:
    """A client certificate recorded in the inventory and written out as a bundle."""

    request: BundleRequest
    ca_dir: Path
    entry: InventoryEntry
    bundle: bundle_mod.ClientBundle
    # The PKCS#12 password: the one given, or a generated one that must be shown exactly once.
    p12_password: bytes
    password_generated: bool
    # The user's other certificates that stay valid: the new one does not revoke them.
    earlier: tuple[InventoryEntry, ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the named server will not do with the certificate."""
        return self.request.warnings

    def to_json(self) -> dict[str, Any]:
        """The ``cert client --json`` document (``"schema": "pgbatten.cert-client/1"``, see the README)."""
        b = self.bundle
        return {
            "schema": "pgbatten.cert-client/1",
            "ca_dir": str(self.ca_dir),
            "certificate": {**self.entry.to_json(), "serial_hex": _hex(self.entry.serial)},
            "bundle": {
                "directory": str(b.directory),
                "files": {
                    "certificate": str(b.cert_path),
                    "key": str(b.key_path),
                    "root_certificate": str(b.root_cert_path),
                    "pk8": str(b.pk8_path),
                    "pkcs12": str(b.p12_path),
                    "install_md": str(b.install_md_path),
                },
            },
            "server": {
                "host": self.request.server_host,
                "port": self.request.port,
                "dbname": self.request.dbname,
            },
            # Only a generated password is shown (once); one read from a file stays where it is.
            "p12_password": self.p12_password.decode() if self.password_generated else None,
            "earlier": [{**e.to_json(), "serial_hex": _hex(e.serial)} for e in self.earlier],
            "warnings": list(self.warnings),
        }


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
    record = BundleRecord(request.out_dir.absolute(), request.server_host, request.port, request.dbname)
    entry = store.record(issued, "client", request.user, bundle=record)
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
            direct_ssl=request.direct_ssl,
        )
    except BaseException:
        # Nobody holds this certificate's key: drop it from the inventory again.
        with contextlib.suppress(PgBattenError):
            store.forget(issued.serial)
        raise
    return IssuedBundle(
        request=request,
        ca_dir=store.path,
        entry=entry,
        bundle=written,
        p12_password=password,
        password_generated=generated,
        earlier=earlier,
    )


# -- revocation ---------------------------------------------------------------------------------------------


def select_revocation(
    store: CAStore,
    target: str,
    *,
    refresh_hint: str | None = None,
    served: Mapping[int, str] | None = None,
    allow_served: bool = False,
) -> list[InventoryEntry]:
    """The certificates ``cert revoke TARGET`` would revoke, or the one-line reason it refuses.

    The rule is ``CAStore.matching``'s: a serial of any kind, a name only for client certificates.
    ``refresh_hint`` is the command that installs the CRL, for a target that is already revoked. ``served``
    maps the serial of each certificate a cluster serves to where (``cluster … (file)``): revoking one of
    those breaks every client that checks the server against the CRL, so it needs ``allow_served``.
    """
    served = served or {}
    matches = store.matching(target)
    if not matches:
        servers = [e for e in store.find(target) if e.kind == "server"]
        in_use = [e for e in servers if e.serial in served]
        if in_use:
            raise PKIError(
                f"{target!r} names the server certificate {_hex(in_use[-1].serial)} that "
                f"{served[in_use[-1].serial]} serves; a name revokes only client certificates"
            )
        if servers:
            raise PKIError(
                f"{target!r} is a server certificate; revoke it by serial: "
                f"pgbatten cert revoke {_hex(servers[-1].serial)}"
            )
        raise PKIError(f"no certificate for {target!r} in the CA inventory (see 'pgbatten cert list')")
    if all(e.revoked for e in matches):
        hint = f" install the CRL with '{refresh_hint}'" if refresh_hint else " nothing to do"
        raise PKIError(f"every certificate for {target!r} is already revoked;{hint}")
    in_use = [e for e in matches if not e.revoked and e.serial in served]
    if in_use and not allow_served:
        entry = in_use[0]
        raise PKIError(
            f"server certificate {_hex(entry.serial)} is the one {served[entry.serial]} serves: revoked, it "
            "fails every client that checks the CRL until the cluster serves a new one; if it must go "
            "(a leaked key), add --allow-served and then re-issue it with pgbatten secure"
        )
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

    def summary(self) -> CrlSummary:
        """Number, entries, size and dates, as ``cert list`` reports them."""
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return CrlSummary.of(self.crl, self.path, size)


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
