"""The CA directory on disk: root certificate, private key, inventory of issued certificates, and the CRL.

Layout (directory mode 0700)::

    ca.crt             root certificate, 0644: what clients use as sslrootcert
    ca.key             root key (PKCS#8 PEM, optionally passphrase-encrypted), 0600
    inventory.sqlite3  every certificate issued, revocations, installs, the last CRL number, 0600
                       (see ``pgbatten.pki.inventory``; an older ``inventory.json`` is migrated once)
    crl.pem            latest CRL, 0644
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pgbatten import faults
from pgbatten.errors import FileProblem, PKIError
from pgbatten.fsutil import atomic_write, describe_os_error, directory_lock, ensure_private_dir, timestamp
from pgbatten.pki.authority import CertificateAuthority, IssuedCertificate
from pgbatten.pki.certbuild import utc_now
from pgbatten.pki.inventory import Inventory
from pgbatten.pki.keys import KeyType, load_private_key_pem, private_key_pem
from pgbatten.pki.records import (
    KINDS,
    BundleRecord,
    CertKind,
    ClusterRef,
    CrlInstall,
    Installation,
    InventoryEntry,
    parse_serial,
)
from pgbatten.pki.revocation import crl_cutoff

__all__ = [
    "CA_LOCK_WAIT",
    "BundleRecord",
    "CAStore",
    "CertKind",
    "ClusterRef",
    "CrlInstall",
    "Installation",
    "InventoryEntry",
    "default_ca_dir",
    "parse_serial",
]


# How long a run waits for another one holding the CA directory (``secure`` and ``renew`` take theirs from
# --lock-wait).
CA_LOCK_WAIT = 15.0


def default_ca_dir() -> Path:
    """``$PGBATTEN_CA_DIR``, else ``$XDG_DATA_HOME/pgbatten/ca``, else ``~/.local/share/pgbatten/ca``."""
    explicit = os.environ.get("PGBATTEN_CA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "pgbatten" / "ca"
    return Path.home() / ".local" / "share" / "pgbatten" / "ca"


class _InDirectory:
    """A file of the CA directory: ``store.NAME`` is ``store.path / filename``."""

    def __init__(self, filename: str, doc: str) -> None:
        self.filename = filename
        self.__doc__ = doc

    @overload
    def __get__(self, store: None, owner: type[CAStore]) -> _InDirectory: ...

    @overload
    def __get__(self, store: CAStore, owner: type[CAStore]) -> Path: ...

    def __get__(self, store: CAStore | None, owner: type[CAStore]) -> Path | _InDirectory:
        return self if store is None else store.path / self.filename


@dataclass(frozen=True)
class CAStore:
    """A CA directory. Cheap to construct; nothing is read until a method needs it."""

    path: Path

    ca_cert_path = _InDirectory("ca.crt", "The root certificate (0644), what clients use as ``sslrootcert``.")
    ca_key_path = _InDirectory("ca.key", "The root's private key (0600).")
    crl_path = _InDirectory("crl.pem", "The latest CRL in PEM.")
    inventory_path = _InDirectory("inventory.sqlite3", "The SQLite inventory of issued certificates (0600).")
    legacy_inventory_path = _InDirectory(
        "inventory.json", "Where pgbatten before 0.3 kept the inventory, as JSON; migrated on first use."
    )

    @property
    def inventory(self) -> Inventory:
        """The inventory database (opened per operation; nothing is read until asked)."""
        return Inventory(self.inventory_path, self.legacy_inventory_path, self.lock)

    def exists(self) -> bool:
        """True if a CA certificate or key is present (even half a CA must not be overwritten)."""
        return self.ca_cert_path.exists() or self.ca_key_path.exists()

    def half_made(self) -> bool:
        """True if only a key is here: what a run killed between writing ``ca.key`` and ``ca.crt`` leaves.

        ``init`` writes the key, then the certificate, then the inventory, and nothing is signed before the
        certificate exists. A key with no certificate, no inventory and no CRL therefore signed nothing and
        no client holds its certificate: it may be replaced (moved aside, never deleted). A key whose CA was
        complete once (an inventory, a CRL) may have signed what is in use, and is never replaced.
        """
        return self.ca_key_path.exists() and not any(
            p.exists()
            for p in (self.ca_cert_path, self.inventory_path, self.legacy_inventory_path, self.crl_path)
        )

    def set_aside_half_made(self) -> Path | None:
        """Move the key of a half-made CA aside (``ca.key.interrupted-STAMP``); the new name, or None."""
        with self.lock():
            if not self.half_made():
                return None
            aside = self.ca_key_path.with_name(f"{self.ca_key_path.name}.interrupted-{timestamp()}")
            try:
                self.ca_key_path.rename(aside)
            except OSError as exc:
                raise FileProblem(self.ca_key_path, f"cannot move aside: {describe_os_error(exc)}") from exc
            return aside

    # -- the CA itself -----------------------------------------------------------------------------------

    def init(
        self,
        *,
        key_type: KeyType = KeyType.ECDSA_P256,
        passphrase: bytes | None = None,
        common_name: str = "pgbatten CA",
        days: int = 3650,
        now: dt.datetime | None = None,
        authority: CertificateAuthority | None = None,
    ) -> CertificateAuthority:
        """Create a CA here, or store ``authority`` made earlier in memory; ``PKIError`` if one exists.

        The key of a half-made CA (see ``half_made``) is moved aside first: call ``set_aside_half_made``
        before to learn its new name.
        """
        ensure_private_dir(self.path)
        with self.lock():
            self.set_aside_half_made()
            if self.ca_key_path.exists() and not self.ca_cert_path.exists():
                raise PKIError(self._keyless_message())
            if self.exists():
                raise PKIError(f"a CA already exists in {self.path}; refusing to overwrite it")
            ca = authority or CertificateAuthority.create(
                common_name=common_name, key_type=key_type, days=days, now=now
            )
            # Key first: a crash in between leaves a key without a certificate, which load() reports,
            # never a certificate whose key is lost.
            atomic_write(self.ca_key_path, private_key_pem(ca.key, passphrase), mode=0o600)
            faults.point("ca-key-written")
            atomic_write(self.ca_cert_path, ca.cert_pem(), mode=0o644)
        self.inventory.create()
        return ca

    def load(self, passphrase: bytes | None = None) -> CertificateAuthority:
        """Load the CA, checking the key's permissions, passphrase and that it matches the certificate."""
        if not self.ca_cert_path.exists():
            if self.half_made():
                raise PKIError(
                    f"no CA in {self.path}: {self.ca_key_path} is what an interrupted 'pgbatten ca init' left"
                    " (no certificate, nothing signed with it); run 'pgbatten ca init' (or 'pgbatten"
                    " secure') to create the CA, the old key is moved aside and kept"
                )
            if self.ca_key_path.exists():
                raise PKIError(self._keyless_message())
            raise PKIError(f"no CA in {self.path}; run 'pgbatten ca init' to create one")
        if not self.ca_key_path.exists():
            raise PKIError(f"{self.ca_cert_path} exists but its key {self.ca_key_path} is missing")
        self._check_key_mode()
        try:
            certificate = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key_data = self.ca_key_path.read_bytes()
        except ValueError as exc:
            raise PKIError(f"{self.ca_cert_path} is not a PEM certificate") from exc
        except OSError as exc:
            raise FileProblem(exc.filename or self.path, f"cannot read: {exc.strerror}") from exc
        key = load_private_key_pem(key_data, passphrase, label=f"CA key {self.ca_key_path}")
        try:
            return CertificateAuthority(certificate=certificate, key=key)
        except PKIError:
            raise PKIError(
                f"CA key {self.ca_key_path} does not belong to certificate {self.ca_cert_path}"
            ) from None

    def load_or_init(
        self, *, key_type: KeyType = KeyType.ECDSA_P256, passphrase: bytes | None = None
    ) -> CertificateAuthority:
        """Load the CA if there is one, else create one (``init``'s defaults with this key type)."""
        if self.exists():
            return self.load(passphrase)
        return self.init(key_type=key_type, passphrase=passphrase)

    def _keyless_message(self) -> str:
        # A complete CA lost its certificate: clients hold it and it may have signed certificates in use.
        return (
            f"{self.ca_key_path} exists but {self.ca_cert_path} is missing, and this CA was in use (it has"
            f" an inventory or a CRL): restore {self.ca_cert_path.name} from a copy (every client's root.crt"
            f" and each bundle's root.crt is one); pgbatten will not replace a CA that may have signed"
            f" certificates"
        )

    def _check_key_mode(self) -> None:
        mode = stat.S_IMODE(self.ca_key_path.stat().st_mode)
        if mode & 0o077:
            raise PKIError(
                f"CA key {self.ca_key_path} is readable by group or others (mode {mode:04o}); "
                f"fix it with: chmod 600 {self.ca_key_path}"
            )

    # -- inventory ---------------------------------------------------------------------------------------

    def record(
        self,
        issued: IssuedCertificate,
        kind: CertKind,
        name: str,
        *,
        installed: Installation | None = None,
        bundle: BundleRecord | None = None,
    ) -> InventoryEntry:
        """Add an issued certificate to the inventory (where it is installed, or its bundle); return it."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        entry = InventoryEntry(
            kind=kind,
            name=name,
            serial=issued.serial,
            not_after=issued.not_after,
            fingerprint_sha256=issued.fingerprint_sha256,
            installed=installed,
            bundle=bundle,
        )
        self.inventory.add(entry)
        return entry

    def set_installed(self, serial: int, installed: Installation) -> None:
        """Record that the certificate with ``serial`` (a server's) is installed at ``installed``."""
        self.inventory.set_installed(serial, installed)

    def forget(self, serial: int) -> None:
        """Remove an entry whose certificate never left pgbatten (its bundle could not be written).

        Never for a certificate someone may hold: that one must be revoked instead.
        """
        self.inventory.remove(serial)

    def entries(self) -> list[InventoryEntry]:
        """Every recorded certificate, oldest first."""
        return self.inventory.entries()

    def find(self, user_or_serial: str) -> list[InventoryEntry]:
        """Entries named ``user_or_serial`` or whose serial it spells (decimal, 0x-hex, colon hex)."""
        return self.inventory.find(user_or_serial)

    def matching(self, user_or_serial: str) -> list[InventoryEntry]:
        """What ``revoke(user_or_serial)`` acts on: one certificate by serial, or a user's client ones."""
        return self.inventory.matching(user_or_serial)

    def revoke(self, user_or_serial: str, now: dt.datetime | None = None) -> list[InventoryEntry]:
        """Mark certificates revoked: one by serial, or every unrevoked client certificate of a user.

        Only the inventory changes; call ``write_crl`` afterwards so the server learns of it.
        """
        return self.inventory.mark_revoked(user_or_serial, utc_now(now))

    # -- CRL ---------------------------------------------------------------------------------------------

    def write_crl(
        self, ca: CertificateAuthority, now: dt.datetime | None = None, days: int = 30
    ) -> x509.CertificateRevocationList:
        """Sign a CRL of every revoked certificate with the next CRL number and write it to ``crl.pem``."""
        # The lock keeps two runs from writing crl.pem out of number order.
        with self.lock():
            # Reserved (committed) before the CRL is written: a failure may skip a number, never reuse one.
            number = self.inventory.next_crl_number()
            now = utc_now(now)
            revoked = self.inventory.revocations(ended_before=crl_cutoff(now))
            crl = ca.build_crl(revoked, number=number, days=days, now=now)
            atomic_write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return crl

    def note_crl_install(self, cluster: ClusterRef, crl_file: Path, now: dt.datetime | None = None) -> None:
        """Remember that ``cluster`` uses this CA's CRL (for ``crl refresh`` hints that name it)."""
        self.inventory.note_crl_install(cluster, crl_file, utc_now(now))

    def load_crl(self) -> x509.CertificateRevocationList | None:
        """The last CRL written, or None if none has been."""
        try:
            data = self.crl_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileProblem(self.crl_path, f"cannot read: {exc.strerror}") from exc
        try:
            return x509.load_pem_x509_crl(data)
        except ValueError as exc:
            raise PKIError(f"{self.crl_path} is not a PEM CRL") from exc

    # -- the lock ----------------------------------------------------------------------------------------

    def lock(self, *, wait: float | None = None) -> contextlib.AbstractContextManager[None]:
        """The CA directory's one lock, held by every run that issues from, signs a CRL with, or moves the CA.

        ``directory_lock`` on the directory itself: re-entrant within this process (``secure``, ``renew``,
        ``ca rotate`` and ``cert revoke`` hold it for their whole run, and the store's own steps take it
        again inside), exclusive across processes; another run holding it is waited for ``wait`` seconds
        (default ``CA_LOCK_WAIT``), then ``BusyError``. A directory that does not exist yet has nothing to
        lock: whoever creates it takes the lock once it is there.
        """
        if not self.path.is_dir():
            return contextlib.nullcontext()
        wait = CA_LOCK_WAIT if wait is None else wait
        return directory_lock(self.path, wait=wait, what=f"the CA in {self.path}")
