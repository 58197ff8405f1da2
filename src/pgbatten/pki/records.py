"""What the CA's inventory records: each certificate issued, where it went, and the clusters named.

Plain values with their JSON forms; :mod:`pgbatten.pki.inventory` keeps them in SQLite.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pgbatten.certfacts import format_fingerprint
from pgbatten.timestamps import iso, parse_iso

if TYPE_CHECKING:
    from pgbatten.cluster.discover import Cluster

CertKind = Literal["server", "client"]
KINDS: tuple[CertKind, ...] = ("server", "client")


@dataclass(frozen=True, init=False)
class ClusterRef:
    """How to name a cluster to pgbatten again: ``--pgdata DIR`` or ``--cluster VERSION/NAME``.

    As the user named it (``status``, ``renew``: printed commands name it the same way) or as pgbatten
    remembers it in the inventory (``ClusterRef.of`` a discovered cluster). Made as
    ``ClusterRef("--pgdata", DIR)``, ``ClusterRef(pgdata=DIR)`` or ``ClusterRef(cluster="15/main")``.
    """

    option: Literal["--pgdata", "--cluster"]
    value: str

    def __init__(
        self,
        option: Literal["--pgdata", "--cluster"] | None = None,
        value: str | None = None,
        *,
        pgdata: Path | str | None = None,
        cluster: str | None = None,
    ) -> None:
        if cluster is not None:
            option, value = "--cluster", cluster
        elif pgdata is not None:
            option, value = "--pgdata", str(pgdata)
        if option not in ("--pgdata", "--cluster") or value is None:
            raise ValueError("a cluster is named by --pgdata DIR or --cluster VERSION/NAME")
        object.__setattr__(self, "option", option)
        object.__setattr__(self, "value", value)

    @classmethod
    def data_directory(cls, path: Path) -> ClusterRef:
        """``--pgdata PATH``."""
        return cls("--pgdata", str(path))

    @classmethod
    def named(cls, name: str) -> ClusterRef:
        """``--cluster VERSION/NAME`` (Debian's postgresql-common)."""
        return cls("--cluster", name)

    def args(self) -> list[str]:
        """``["--pgdata", DIR]`` or ``["--cluster", "15/main"]``."""
        return [self.option, self.value]

    def discover(self) -> Cluster:
        """The cluster this names, found as ``--pgdata``/``--cluster`` find it."""
        from pgbatten.cluster.discover import discover

        if self.option == "--cluster":
            return discover(cluster=self.value)
        return discover(pgdata=Path(self.value))

    def dump_json(self) -> str:
        """The inventory's stored form."""
        return json.dumps([self.option, self.value])

    @classmethod
    def load_json(cls, text: str | None) -> ClusterRef | None:
        if not text:
            return None
        option, value = json.loads(text)
        if option not in ("--pgdata", "--cluster") or not isinstance(value, str):
            raise ValueError(f"bad cluster reference {text!r}")
        return cls(option, value)

    @classmethod
    def of(cls, label: str, data_dir: Path) -> ClusterRef:
        """The reference for a discovered cluster: a Debian ``V/N`` label, else its data directory."""
        if re.fullmatch(r"\d+/[A-Za-z0-9_.-]+", label):
            return cls("--cluster", label)
        return cls("--pgdata", str(data_dir))


@dataclass(frozen=True)
class Installation:
    """Where a server certificate was installed: the file, and the cluster that serves it."""

    cert_file: Path
    cluster: ClusterRef | None = None


@dataclass(frozen=True)
class BundleRecord:
    """Where a client bundle was written and which server its INSTALL.md names: what renewing it needs."""

    directory: Path
    host: str
    port: int
    dbname: str

    def dump_json(self) -> str:
        """The inventory's stored form."""
        return json.dumps([str(self.directory), self.host, self.port, self.dbname])

    @classmethod
    def load_json(cls, text: str | None) -> BundleRecord | None:
        if not text:
            return None
        directory, host, port, dbname = json.loads(text)
        return cls(Path(directory), str(host), int(port), str(dbname))


@dataclass(frozen=True)
class InventoryEntry:
    """One issued certificate as the inventory records it."""

    kind: CertKind
    name: str
    serial: int
    not_after: dt.datetime
    fingerprint_sha256: str
    revoked_at: dt.datetime | None = None
    installed: Installation | None = None
    bundle: BundleRecord | None = None

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
            "not_after": iso(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
            "revoked_at": iso(self.revoked_at) if self.revoked_at is not None else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> InventoryEntry:
        """Parse one ``inventory.json`` record; ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        name = data["name"]
        if not isinstance(name, str):
            raise TypeError("name must be a string")
        revoked_at = data.get("revoked_at")
        return cls(
            kind=kind,
            name=name,
            serial=int(str(data["serial"]), 10),
            not_after=parse_iso(data["not_after"]),
            # inventories written before 0.2 hold lower-case hex without colons
            fingerprint_sha256=format_fingerprint(str(data["fingerprint_sha256"])),
            revoked_at=parse_iso(revoked_at) if revoked_at is not None else None,
        )


@dataclass(frozen=True)
class CrlInstall:
    """A cluster pgbatten installed this CA's CRL on: where ``crl refresh`` must go again."""

    cluster: ClusterRef
    crl_file: Path
    installed_at: dt.datetime


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
