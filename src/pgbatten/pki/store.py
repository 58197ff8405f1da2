"""The CA directory on disk: root certificate, private key, inventory of issued certificates, and the CRL.

Layout (directory mode 0700)::

    ca.crt          root certificate, 0644: what clients use as sslrootcert
    ca.key          root key (PKCS#8 PEM, optionally passphrase-encrypted), 0600
    inventory.json  every certificate issued, with revocation state and the last CRL number, 0600
    crl.pem         latest CRL, 0644
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pgbatten.certfacts import format_fingerprint
from pgbatten.errors import FileProblem, PKIError
from pgbatten.fsutil import atomic_write, ensure_private_dir
from pgbatten.pki.authority import CertificateAuthority, IssuedCertificate, Revocation, utc_now
from pgbatten.pki.keys import KeyType, load_private_key_pem, private_key_pem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl; the CA directory is then unlocked.
    fcntl = None  # type: ignore[assignment]

CertKind = Literal["server", "client"]
_KINDS: tuple[CertKind, ...] = ("server", "client")
INVENTORY_VERSION = 1


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


@dataclass(frozen=True)
class InventoryEntry:
    """One issued certificate as recorded in ``inventory.json``."""

    kind: CertKind
    name: str
    serial: int
    not_after: dt.datetime
    fingerprint_sha256: str
    revoked_at: dt.datetime | None = None

    @property
    def revoked(self) -> bool:
        """True once the certificate has been revoked."""
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        """The JSON form; the serial is a decimal string because 159-bit integers break many JSON readers."""
        return {
            "kind": self.kind,
            "name": self.name,
            "serial": str(self.serial),
            "not_after": _iso(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
            "revoked_at": _iso(self.revoked_at) if self.revoked_at is not None else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> InventoryEntry:
        """Parse one record; ``ValueError``/``KeyError``/``TypeError`` on malformed input."""
        kind = data["kind"]
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        name = data["name"]
        if not isinstance(name, str):
            raise TypeError("name must be a string")
        revoked_at = data.get("revoked_at")
        return cls(
            kind=kind,
            name=name,
            serial=int(str(data["serial"]), 10),
            not_after=_parse_iso(data["not_after"]),
            # inventories written before 0.2 hold lower-case hex without colons
            fingerprint_sha256=format_fingerprint(str(data["fingerprint_sha256"])),
            revoked_at=_parse_iso(revoked_at) if revoked_at is not None else None,
        )


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(text: Any) -> dt.datetime:
    if not isinstance(text, str):
        raise TypeError("timestamp must be a string")
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return value.astimezone(dt.UTC)


def parse_serial(text: str) -> int | None:
    """A serial in decimal, ``0x``-hex or colon hex (as ``openssl x509 -text`` prints it); else None."""
    cleaned = text.strip().lower()
    try:
        if cleaned.startswith("0x"):
            return int(cleaned[2:], 16)
        if ":" in cleaned:
            parts = cleaned.split(":")
            if all(len(p) in (1, 2) for p in parts):
                return int("".join(parts), 16)
            return None
        if cleaned.isdigit():
            return int(cleaned, 10)
    except ValueError:
        return None
    return None


def _matches(entry: InventoryEntry, user_or_serial: str, serial: int | None) -> bool:
    return entry.serial == serial or (entry.kind == "client" and entry.name == user_or_serial)


@dataclass(frozen=True)
class _Inventory:
    crl_number: int
    entries: tuple[InventoryEntry, ...]


@dataclass(frozen=True)
class CAStore:
    """A CA directory. Cheap to construct; nothing is read until a method needs it."""

    path: Path

    @property
    def ca_cert_path(self) -> Path:
        """The root certificate (0644), what clients use as ``sslrootcert``."""
        return self.path / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        """The root's private key (0600)."""
        return self.path / "ca.key"

    @property
    def crl_path(self) -> Path:
        """The latest CRL in PEM."""
        return self.path / "crl.pem"

    @property
    def inventory_path(self) -> Path:
        """The JSON record of issued certificates."""
        return self.path / "inventory.json"

    @property
    def _lock_path(self) -> Path:
        return self.path / ".lock"

    def exists(self) -> bool:
        """True if a CA certificate or key is present (even half a CA must not be overwritten)."""
        return self.ca_cert_path.exists() or self.ca_key_path.exists()

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
        """Create a CA here, or store ``authority`` made earlier in memory; ``PKIError`` if one exists."""
        ensure_private_dir(self.path)
        with self._locked():
            if self.exists():
                raise PKIError(f"a CA already exists in {self.path}; refusing to overwrite it")
            ca = authority or CertificateAuthority.create(
                common_name=common_name, key_type=key_type, days=days, now=now
            )
            # Key first: a crash in between leaves a key without a certificate, which load() reports,
            # never a certificate whose key is lost.
            atomic_write(self.ca_key_path, private_key_pem(ca.key, passphrase), mode=0o600)
            atomic_write(self.ca_cert_path, ca.cert_pem(), mode=0o644)
            if not self.inventory_path.exists():
                self._write_inventory(_Inventory(crl_number=0, entries=()))
        return ca

    def load(self, passphrase: bytes | None = None) -> CertificateAuthority:
        """Load the CA, checking the key's permissions, passphrase and that it matches the certificate."""
        if not self.ca_cert_path.exists():
            if self.ca_key_path.exists():
                raise PKIError(f"{self.ca_key_path} exists but {self.ca_cert_path} is missing")
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
        self,
        *,
        key_type: KeyType = KeyType.ECDSA_P256,
        passphrase: bytes | None = None,
        common_name: str = "pgbatten CA",
        days: int = 3650,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """Load the CA if there is one, else create it with these settings."""
        if self.exists():
            return self.load(passphrase)
        return self.init(
            key_type=key_type, passphrase=passphrase, common_name=common_name, days=days, now=now
        )

    def _check_key_mode(self) -> None:
        mode = stat.S_IMODE(self.ca_key_path.stat().st_mode)
        if mode & 0o077:
            raise PKIError(
                f"CA key {self.ca_key_path} is readable by group or others (mode {mode:04o}); "
                f"fix it with: chmod 600 {self.ca_key_path}"
            )

    # -- inventory ---------------------------------------------------------------------------------------

    def record(self, issued: IssuedCertificate, kind: CertKind, name: str) -> InventoryEntry:
        """Add an issued certificate to the inventory and return its entry."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
        entry = InventoryEntry(
            kind=kind,
            name=name,
            serial=issued.serial,
            not_after=issued.not_after,
            fingerprint_sha256=issued.fingerprint_sha256,
        )
        with self._locked():
            inventory = self._read_inventory()
            if any(e.serial == entry.serial for e in inventory.entries):
                raise PKIError(f"serial {entry.serial} is already in the CA inventory")
            self._write_inventory(replace(inventory, entries=(*inventory.entries, entry)))
        return entry

    def forget(self, serial: int) -> None:
        """Remove an entry whose certificate never left pgbatten (its bundle could not be written).

        Never for a certificate someone may hold: that one must be revoked instead.
        """
        with self._locked():
            inventory = self._read_inventory()
            kept = tuple(e for e in inventory.entries if e.serial != serial)
            if len(kept) != len(inventory.entries):
                self._write_inventory(replace(inventory, entries=kept))

    def entries(self) -> list[InventoryEntry]:
        """Every recorded certificate, oldest first."""
        return list(self._read_inventory().entries)

    def find(self, user_or_serial: str) -> list[InventoryEntry]:
        """Entries named ``user_or_serial`` or whose serial it spells (decimal, 0x-hex, colon hex)."""
        serial = parse_serial(user_or_serial)
        return [e for e in self.entries() if e.name == user_or_serial or e.serial == serial]

    def matching(self, user_or_serial: str) -> list[InventoryEntry]:
        """What ``revoke(user_or_serial)`` acts on: one certificate by serial, or a user's client ones.

        A name never selects a server certificate: a server named like a user must not be swept up by
        revoking that user.
        """
        serial = parse_serial(user_or_serial)
        return [e for e in self.entries() if _matches(e, user_or_serial, serial)]

    def revoke(self, user_or_serial: str, now: dt.datetime | None = None) -> list[InventoryEntry]:
        """Mark certificates revoked: one by serial, or every unrevoked client certificate of a user.

        Only the inventory changes; call ``write_crl`` afterwards so the server learns of it.
        """
        revoked_at = utc_now(now)
        serial = parse_serial(user_or_serial)
        with self._locked():
            inventory = self._read_inventory()
            matches = [e for e in inventory.entries if _matches(e, user_or_serial, serial)]
            if not matches:
                raise PKIError(f"no certificate for {user_or_serial!r} in the CA inventory")
            targets = {e.serial for e in matches if not e.revoked}
            if not targets:
                raise PKIError(f"every certificate for {user_or_serial!r} is already revoked")
            updated = tuple(
                replace(e, revoked_at=revoked_at) if e.serial in targets else e for e in inventory.entries
            )
            self._write_inventory(replace(inventory, entries=updated))
        return [e for e in updated if e.serial in targets]

    # -- CRL ---------------------------------------------------------------------------------------------

    def write_crl(
        self, ca: CertificateAuthority, now: dt.datetime | None = None, days: int = 30
    ) -> x509.CertificateRevocationList:
        """Sign a CRL of every revoked certificate with the next CRL number and write it to ``crl.pem``."""
        with self._locked():
            inventory = self._read_inventory()
            number = inventory.crl_number + 1
            # Reserve the number before writing the CRL: a failure may skip a number, never reuse one.
            self._write_inventory(replace(inventory, crl_number=number))
            revoked = [
                Revocation(e.serial, e.revoked_at, e.not_after)
                for e in inventory.entries
                if e.revoked_at is not None
            ]
            crl = ca.build_crl(revoked, number=number, days=days, now=now)
            atomic_write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return crl

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

    # -- plumbing ----------------------------------------------------------------------------------------

    def _read_inventory(self) -> _Inventory:
        try:
            raw = self.inventory_path.read_bytes()
        except FileNotFoundError:
            return _Inventory(crl_number=0, entries=())
        except OSError as exc:
            raise FileProblem(self.inventory_path, f"cannot read: {exc.strerror}") from exc
        try:
            # Decoding inside the try: bytes that are not UTF-8 are corruption too (UnicodeDecodeError is
            # a ValueError), not an internal error.
            data = json.loads(raw.decode("utf-8"))
            crl_number = int(data.get("crl_number", 0))
            entries = tuple(InventoryEntry.from_json(item) for item in data["certificates"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PKIError(f"{self.inventory_path} is corrupt: {exc}") from exc
        return _Inventory(crl_number=crl_number, entries=entries)

    def _write_inventory(self, inventory: _Inventory) -> None:
        data = {
            "version": INVENTORY_VERSION,
            "crl_number": inventory.crl_number,
            "certificates": [e.to_json() for e in inventory.entries],
        }
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        atomic_write(self.inventory_path, text.encode("utf-8"), mode=0o600)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two pgbatten runs against one CA must not interleave read-modify-write of the inventory.
        if fcntl is None or not self.path.is_dir():  # pragma: no cover
            yield
            return
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise FileProblem(self._lock_path, f"cannot open lock file: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
