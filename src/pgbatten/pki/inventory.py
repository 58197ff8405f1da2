"""The CA's inventory of issued certificates: an SQLite database in the CA directory.

SQLite from the standard library gives what a JSON file could not: an update touches a few pages instead of
rewriting every record, lookups by name or serial use an index, and concurrent pgbatten runs are serialised
by SQLite's own transactions and file locks (a writer waits up to ``BUSY_TIMEOUT`` for another). Issuing the
100,000th certificate costs what the first did.

The file is created with mode 0600 (SQLite gives its journal the same mode). A CA directory written by an
older pgbatten holds ``inventory.json``; the first access migrates it once, in one transaction, into a new
database renamed into place, and keeps the JSON file as ``inventory.json.bak``.

Serials are stored as 40 zero-padded hex digits (X.509 serials reach 159 bits, beyond SQLite's 64-bit
integers), so text order is numeric order: the CRL is read already sorted. What a row holds (the entry, its
installation, its bundle) is :mod:`pgbatten.pki.records`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pgbatten.errors import FileProblem, PKIError
from pgbatten.pki.records import (
    BundleRecord,
    ClusterRef,
    CrlInstall,
    Installation,
    InventoryEntry,
    parse_serial,
)
from pgbatten.timestamps import parse_iso

SCHEMA_VERSION = 1
# A second pgbatten run waits this long for the first to finish its transaction before giving up.
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE certificates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- issue order
    serial TEXT NOT NULL UNIQUE,            -- 40 hex digits
    kind TEXT NOT NULL CHECK (kind IN ('server', 'client')),
    name TEXT NOT NULL,
    not_after TEXT NOT NULL,                -- ISO 8601, UTC
    fingerprint_sha256 TEXT NOT NULL,
    revoked_at TEXT,
    installed_file TEXT,                    -- where a server certificate was installed
    installed_cluster TEXT,                 -- '--pgdata DIR' or '--cluster V/N', as JSON [option, value]
    bundle TEXT                             -- a client bundle's directory and server, as JSON
);
CREATE INDEX certificates_by_name ON certificates (name, kind);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
-- Covering, in serial order: the CRL is read from this index alone, already sorted.
CREATE INDEX certificates_crl ON certificates (serial, revoked_at, not_after) WHERE revoked_at IS NOT NULL;
CREATE TABLE crl_installs (
    cluster TEXT PRIMARY KEY,               -- JSON [option, value]
    crl_file TEXT NOT NULL,
    installed_at TEXT NOT NULL
);
"""

_SELECT = (
    "SELECT kind, name, serial, not_after, fingerprint_sha256, revoked_at, "
    "installed_file, installed_cluster, bundle FROM certificates "
)
_INSERT = (
    "INSERT INTO certificates "
    "(kind, name, serial, not_after, fingerprint_sha256, revoked_at, "
    "installed_file, installed_cluster, bundle) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The revocation rule (see Inventory.matching), with parameters (serial key, name).
_MATCH = "WHERE serial = ? OR (kind = 'client' AND name = ?) ORDER BY seq"


def _stamp(value: dt.datetime) -> str:
    # The database's one timestamp format: fixed width, so that text order is time order in SQL.
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _key(serial: int) -> str:
    return f"{serial:040x}"


def _entry(row: tuple[Any, ...]) -> InventoryEntry:
    # The hot path of `cert list`: timestamps are stored as UTC ISO 8601 with "Z", which fromisoformat
    # reads as aware UTC datetimes; anything else is corruption (caught by Inventory._select).
    kind, name, serial, not_after, fingerprint, revoked_at, installed_file, installed_cluster, bundle = row
    return InventoryEntry(
        kind=kind,
        name=name,
        serial=int(serial, 16),
        not_after=_utc(not_after),
        fingerprint_sha256=fingerprint,
        revoked_at=_utc(revoked_at) if revoked_at is not None else None,
        installed=(
            Installation(Path(installed_file), ClusterRef.load_json(installed_cluster))
            if installed_file is not None
            else None
        ),
        bundle=BundleRecord.load_json(bundle) if bundle is not None else None,
    )


def _utc(text: str) -> dt.datetime:
    # Every stamp this module writes ends in "Z", which fromisoformat reads as UTC.
    if text[-1:] != "Z":
        raise ValueError(f"timestamp {text!r} is not UTC")
    return dt.datetime.fromisoformat(text)


def _row(entry: InventoryEntry) -> tuple[Any, ...]:
    installed = entry.installed
    return (
        entry.kind,
        entry.name,
        _key(entry.serial),
        _stamp(entry.not_after),
        entry.fingerprint_sha256,
        _stamp(entry.revoked_at) if entry.revoked_at is not None else None,
        str(installed.cert_file) if installed is not None else None,
        installed.cluster.dump_json() if installed is not None and installed.cluster is not None else None,
        entry.bundle.dump_json() if entry.bundle is not None else None,
    )


@dataclass(frozen=True)
class Inventory:
    """The database at ``path``; ``legacy`` is the JSON file it replaces; ``lock`` serialises creation."""

    path: Path
    legacy: Path
    lock: Callable[[], AbstractContextManager[None]]

    @property
    def legacy_backup(self) -> Path:
        return self.legacy.with_name(self.legacy.name + ".bak")

    # -- reading -----------------------------------------------------------------------------------------

    def entries(self) -> list[InventoryEntry]:
        """Every recorded certificate, oldest first: one query."""
        return self._select("ORDER BY seq")

    def find(self, user_or_serial: str) -> list[InventoryEntry]:
        """Entries named ``user_or_serial`` or whose serial it spells (decimal, 0x-hex, colon hex)."""
        serial = parse_serial(user_or_serial)
        return self._select(
            "WHERE name = ? OR serial = ? ORDER BY seq",
            (user_or_serial, _key(serial) if serial is not None else None),
        )

    def matching(self, user_or_serial: str) -> list[InventoryEntry]:
        """What ``revoke(user_or_serial)`` acts on: one certificate by serial, or a user's client ones.

        A name never selects a server certificate: a server named like a user must not be swept up by
        revoking that user.
        """
        return self._select(_MATCH, _match_args(user_or_serial))

    def valid_clients(self, user: str) -> list[InventoryEntry]:
        """``user``'s client certificates that are not revoked (expired ones included), oldest first."""
        return self._select("WHERE name = ? AND kind = 'client' AND revoked_at IS NULL ORDER BY seq", (user,))

    def newest_server(self) -> InventoryEntry | None:
        """The server certificate issued last and not revoked, if any."""
        found = self._select("WHERE kind = 'server' AND revoked_at IS NULL ORDER BY seq DESC LIMIT 1")
        return found[0] if found else None

    def installed_servers(self) -> list[InventoryEntry]:
        """Server certificates recorded as installed somewhere, oldest first."""
        return self._select("WHERE installed_file IS NOT NULL ORDER BY seq")

    def revocations(self, ended_before: dt.datetime) -> list[tuple[int, dt.datetime]]:
        """``(serial, revoked_at)`` of every revoked certificate that had not ended by ``ended_before``.

        Sorted by serial (the index's order). Revocation times repeat (a user's certificates are revoked
        together), so each distinct one is parsed once: the CRL of 100,000 entries is read in one pass.
        """
        rows = self._query(
            "SELECT serial, revoked_at FROM certificates "
            "WHERE revoked_at IS NOT NULL AND not_after >= ? ORDER BY serial",
            (_stamp(ended_before),),
        )
        times: dict[str, dt.datetime] = {}
        out = []
        try:
            for serial, revoked_at in rows:
                when = times.get(revoked_at)
                if when is None:
                    when = times[revoked_at] = _utc(revoked_at)
                out.append((int(serial, 16), when))
        except (ValueError, TypeError) as exc:
            raise PKIError(f"{self.path} is corrupt: {exc}") from exc
        return out

    def newest_revoked(self, ended_before: dt.datetime, limit: int) -> list[int]:
        """The serials of the ``limit`` most recent revocations still in force, oldest of them first."""
        rows = self._query(
            "SELECT serial FROM certificates WHERE revoked_at IS NOT NULL AND not_after >= ? "
            "ORDER BY revoked_at DESC, seq DESC LIMIT ?",
            (_stamp(ended_before), limit),
        )
        return [int(serial, 16) for (serial,) in reversed(rows)]

    def crl_installs(self) -> list[CrlInstall]:
        """Clusters this CA's CRL was installed on, most recent first."""
        rows = self._query(
            "SELECT cluster, crl_file, installed_at FROM crl_installs ORDER BY installed_at DESC"
        )
        found = []
        for cluster, crl_file, installed_at in rows:
            ref = ClusterRef.load_json(cluster)
            if ref is not None:
                found.append(CrlInstall(ref, Path(crl_file), parse_iso(installed_at)))
        return found

    # -- writing -----------------------------------------------------------------------------------------

    def add(self, entry: InventoryEntry) -> None:
        """Insert one entry; ``PKIError`` if its serial is already recorded."""
        with self._write() as db:
            try:
                db.execute(_INSERT, _row(entry))
            except sqlite3.IntegrityError:
                raise PKIError(f"serial {entry.serial} is already in the CA inventory") from None

    def add_many(self, entries: Iterable[InventoryEntry]) -> None:
        """Insert many entries in one transaction (a migration, a benchmark's fill)."""
        with self._write() as db:
            _insert_all(db, entries)

    def remove(self, serial: int) -> None:
        """Delete the entry with ``serial``, if there is one."""
        with self._write() as db:
            db.execute("DELETE FROM certificates WHERE serial = ?", (_key(serial),))

    def mark_revoked(self, user_or_serial: str, revoked_at: dt.datetime) -> list[InventoryEntry]:
        """Revoke what :meth:`matching` selects and is not revoked yet; atomically, in one transaction."""
        with self._write() as db:
            rows = db.execute(_SELECT + _MATCH, _match_args(user_or_serial)).fetchall()
            if not rows:
                raise PKIError(f"no certificate for {user_or_serial!r} in the CA inventory")
            targets = [_entry(r) for r in rows if r[5] is None]
            if not targets:
                raise PKIError(f"every certificate for {user_or_serial!r} is already revoked")
            db.executemany(
                "UPDATE certificates SET revoked_at = ? WHERE serial = ?",
                [(_stamp(revoked_at), _key(e.serial)) for e in targets],
            )
        return [replace(e, revoked_at=revoked_at) for e in targets]

    def set_installed(self, serial: int, installed: Installation) -> None:
        """Record where the certificate with ``serial`` was installed (server certificates)."""
        cluster = installed.cluster.dump_json() if installed.cluster is not None else None
        with self._write() as db:
            db.execute(
                "UPDATE certificates SET installed_file = ?, installed_cluster = ? WHERE serial = ?",
                (str(installed.cert_file), cluster, _key(serial)),
            )

    def note_crl_install(self, cluster: ClusterRef, crl_file: Path, when: dt.datetime) -> None:
        """Remember that ``cluster`` now uses this CA's CRL, so hints can name it."""
        with self._write() as db:
            db.execute(
                "INSERT INTO crl_installs (cluster, crl_file, installed_at) VALUES (?, ?, ?) "
                "ON CONFLICT (cluster) DO UPDATE SET crl_file = excluded.crl_file, "
                "installed_at = excluded.installed_at",
                (cluster.dump_json(), str(crl_file), _stamp(when)),
            )

    def next_crl_number(self) -> int:
        """Reserve and return the next CRL number (committed before any CRL carries it)."""
        with self._write() as db:
            rows = db.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchall()
            number = (int(rows[0][0]) if rows else 0) + 1
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('crl_number', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )
        return number

    def create(self, crl_number: int = 0) -> None:
        """Create an empty database if there is none (``CAStore.init``)."""
        with self.lock():
            if not self.path.exists():
                self._build((), crl_number)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _select(self, where: str, args: tuple[Any, ...] = ()) -> list[InventoryEntry]:
        try:
            # ``where`` is always one of this module's constant clauses; values travel as parameters.
            return [_entry(r) for r in self._query(_SELECT + where, args)]
        except (ValueError, TypeError) as exc:
            raise PKIError(f"{self.path} is corrupt: {exc}") from exc

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self._ready(create=False):
            return []
        with self._errors():
            db = self._connect()
            try:
                return db.execute(sql, args).fetchall()
            finally:
                db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._ready(create=True)
        with self._errors():
            db = self._connect()
            try:
                # IMMEDIATE takes the write lock at once: two runs cannot both read, then both write.
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.rollback()
                    raise
                db.commit()
            finally:
                db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            # FULL: a certificate recorded is on disk before its bundle is handed out.
            db.execute("PRAGMA synchronous = FULL")
            rows = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall()
            version = int(rows[0][0]) if rows else 0
            if version != SCHEMA_VERSION:
                raise PKIError(
                    f"{self.path} has schema version {version}; this pgbatten reads version {SCHEMA_VERSION}"
                )
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise PKIError(
                    f"{self.path} is busy: another pgbatten run kept it locked for {BUSY_TIMEOUT:.0f} s"
                ) from exc
            if "unable to open" in text or "readonly" in text or "disk" in text:
                raise FileProblem(self.path, f"cannot use the CA inventory: {text}") from exc
            raise PKIError(f"{self.path} is corrupt: {text}") from exc
        except sqlite3.DatabaseError as exc:
            raise PKIError(f"{self.path} is corrupt: {exc}") from exc

    def _ready(self, *, create: bool) -> bool:
        """Whether the database exists, migrating ``inventory.json`` into it first if that is what exists."""
        if self.path.exists():
            return True
        if not self.legacy.exists() and not create:
            return False
        with self.lock():
            if self.path.exists():  # another run migrated it meanwhile
                return True
            if self.legacy.exists():
                crl_number, entries = _read_legacy(self.legacy)
                self._build(entries, crl_number)
                try:
                    self.legacy.replace(self.legacy_backup)
                except OSError as exc:
                    raise FileProblem(self.legacy, f"migrated, but cannot rename: {exc.strerror}") from exc
            else:
                self._build((), 0)
        return True

    def _build(self, entries: Iterable[InventoryEntry], crl_number: int) -> None:
        # Built beside the final name and renamed into place: a crash leaves no half-made inventory.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise FileProblem(tmp, f"cannot create the CA inventory: {exc.strerror}") from exc
        try:
            with self._errors():
                db = sqlite3.connect(tmp, isolation_level=None)
                try:
                    db.execute("PRAGMA synchronous = FULL")
                    db.execute("BEGIN")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                    db.execute("INSERT INTO meta (key, value) VALUES ('crl_number', ?)", (str(crl_number),))
                    _insert_all(db, entries)
                    db.commit()
                finally:
                    db.close()
            tmp.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def _match_args(user_or_serial: str) -> tuple[Any, ...]:
    serial = parse_serial(user_or_serial)
    return (_key(serial) if serial is not None else None, user_or_serial)


def _insert_all(db: sqlite3.Connection, entries: Iterable[InventoryEntry]) -> None:
    try:
        db.executemany(_INSERT, (_row(e) for e in entries))
    except sqlite3.IntegrityError as exc:
        raise PKIError(f"the CA inventory would hold a serial twice: {exc}") from None


def _read_legacy(path: Path) -> tuple[int, list[InventoryEntry]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FileProblem(path, f"cannot read: {exc.strerror}") from exc
    try:
        # Decoding inside the try: bytes that are not UTF-8 are corruption too (UnicodeDecodeError is a
        # ValueError), not an internal error.
        data = json.loads(raw.decode("utf-8"))
        crl_number = int(data.get("crl_number", 0))
        entries = [InventoryEntry.from_json(item) for item in data["certificates"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PKIError(f"{path} is corrupt: {exc}") from exc
    return crl_number, entries
