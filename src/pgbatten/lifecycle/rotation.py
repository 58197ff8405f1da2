"""CA rotation with an overlap: ``pgbatten ca rotate`` starts it, ``pgbatten ca retire`` ends it.

Layout of a CA directory during an overlap::

    ca.crt, ca.key, inventory, crl.pem    the NEW CA: everything issues from it from now on
    rotation/state.json                   when the overlap started, when it is planned to end
    rotation/cross.crt                    the new CA's name and key, certified by the old CA
    rotation/previous/                    the OLD CA, a CA directory of its own (its inventory and CRL)

Through the overlap no client that followed the instructions loses its connection: servers trust both
roots (``ssl_ca_file`` holds both, so client certificates of either CA are accepted) and, once ``renew``
has re-issued their certificates from the new CA, serve the leaf followed by the cross certificate — a
client holding only the old root builds leaf → cross → old root, one holding the new root (or both)
stops at the new root. Each CA keeps its own CRL, and a server with ``ssl_crl_file`` gets both, since
PostgreSQL checks the CRL of every CA in a client's chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pgbatten.certfacts import fingerprint_sha256
from pgbatten.errors import PKIError
from pgbatten.fsutil import atomic_write, ensure_private_dir, fsync_directory, read_bytes_or_none
from pgbatten.lifecycle.facts import RotationFacts, read_ca
from pgbatten.pki import CAStore, CertificateAuthority, InventoryEntry, key_type_of
from pgbatten.pki.overlap import (
    CROSS_FILE,
    PREVIOUS_DIR,
    RETIRED_DIR,
    ROOTS_FILE,
    ROTATION_DIR,
    STATE_FILE,
    Rotation,
    load_rotation,
    rotation_dir,
    state_json,
)
from pgbatten.pki.trust import Trust
from pgbatten.timestamps import iso, parse_iso


def read_rotation(ca_dir: Path) -> RotationFacts | None:
    """The overlap as ``status`` sees it (no key needed); None when there is none or it cannot be read."""
    try:
        rotation = load_rotation(ca_dir)
    except PKIError:
        return None
    if rotation is None:
        return None
    return RotationFacts(
        previous=read_ca(rotation.previous.path),
        cross=rotation.cross,
        started_at=iso(rotation.started_at),
        planned_end=iso(rotation.planned_end),
    )


# -- starting and ending an overlap --------------------------------------------------------------------------

STAGING_DIR = "staging"
# What stays in the CA directory when the CA files move: the lock file of earlier versions, pgbatten's own
# bookkeeping, bundles.
_KEPT = {".lock", ROTATION_DIR, RETIRED_DIR, ROOTS_FILE, "renewals.json", "bundles"}
DEFAULT_OVERLAP = dt.timedelta(days=90)


def next_common_name(current: str) -> str:
    """``pgbatten CA`` → ``pgbatten CA G2`` → ``pgbatten CA G3``: a new name, so chains never mix them up."""
    match = re.fullmatch(r"(.*) G(\d+)", current)
    base, generation = (match.group(1), int(match.group(2))) if match else (current, 1)
    name = f"{base} G{generation + 1}"
    return name if len(name) <= 64 else f"{base[: 64 - len(name)]} G{generation + 1}"


def cross_certificate(
    issuer: CertificateAuthority, subject: x509.Certificate, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """``subject``'s name and key certified by ``issuer``: the bridge from the old root to the new CA
    (``CertificateAuthority.cross_sign``: never outliving either CA, with the new CA's own key identifier)."""
    return issuer.cross_sign(subject, now=now)


@dataclass(frozen=True)
class RotateResult:
    """The overlap just started (or resumed after an interruption)."""

    previous: x509.Certificate
    current: x509.Certificate
    cross: x509.Certificate
    rotation: Rotation
    roots_path: Path
    resumed: bool = False


def _move_ca_files(source: Path, target: Path) -> None:
    ensure_private_dir(target)
    for entry in sorted(source.iterdir()):
        if entry.name in _KEPT or entry.is_dir() or entry.name.endswith(".tmp"):
            continue
        entry.replace(target / entry.name)
    fsync_directory(source)
    fsync_directory(target)


def _phase(base: Path) -> str | None:
    data = read_bytes_or_none(base / STATE_FILE)
    if data is None:
        return None
    try:
        return str(json.loads(data).get("phase", "overlap"))
    except ValueError as exc:
        raise PKIError(f"the CA rotation state {base / STATE_FILE} is damaged: {exc}") from exc


def _write_state(
    base: Path, phase: str, started: dt.datetime, planned: dt.datetime, old: str, new: str
) -> None:
    state = json.loads(state_json(started, planned, old, new))
    state["phase"] = phase
    atomic_write(base / STATE_FILE, (json.dumps(state, indent=2) + "\n").encode(), mode=0o600)


def write_roots(store: CAStore, trust: Trust) -> Path:
    """``roots.crt`` in the CA directory: what clients use as sslrootcert from now on."""
    path = store.path / ROOTS_FILE
    atomic_write(path, trust.roots_pem(), mode=0o644)
    return path


def rotate(
    ca_dir: Path,
    *,
    passphrase: bytes | None = None,
    common_name: str | None = None,
    days: int | None = None,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    now: dt.datetime | None = None,
) -> RotateResult:
    """Create the next CA and start the overlap (see the module docstring); a re-run resumes an interrupted
    one. The old CA's key is needed once, to sign the cross certificate."""
    now = now or dt.datetime.now(dt.UTC)
    store = CAStore(ca_dir)
    base = rotation_dir(ca_dir)
    phase = _phase(base)
    if phase == "overlap":
        since = parse_iso(json.loads((base / STATE_FILE).read_bytes())["started_at"])
        raise PKIError(
            f"a CA rotation is already in progress in {ca_dir} (since {since:%Y-%m-%d}); end it first"
            " with pgbatten ca retire"
        )
    # No run may plan with, issue from or sign a CRL with a CA whose files are moving.
    with store.lock():
        resumed = phase is not None
        if phase is None:
            old = store.load(passphrase)
            key_type = key_type_of(old.key)
            lifetime = old.certificate.not_valid_after_utc - old.certificate.not_valid_before_utc
            # A new name too (G2, G3…), so that no chain builder can mistake one root for the other.
            new = old.next_ca(
                common_name=common_name or next_common_name(_cn(old.certificate)),
                key_type=key_type,
                days=days or max(1, round(lifetime / dt.timedelta(days=1))),
                now=now,
            )
            cross = new.chain[0]
            ensure_private_dir(base)
            staging = CAStore(base / STAGING_DIR)
            if staging.path.exists():
                shutil.rmtree(staging.path)  # a staging left by a run killed before it began the move
            staging.init(authority=new, passphrase=passphrase)
            atomic_write(base / CROSS_FILE, cross.public_bytes(serialization.Encoding.PEM), mode=0o644)
            _write_state(base, "preparing", now, now + overlap, _fp(old.certificate), _fp(new.certificate))
            phase = "preparing"
        state = json.loads((base / STATE_FILE).read_bytes())
        started, planned = parse_iso(state["started_at"]), parse_iso(state["planned_end"])
        if phase == "preparing":
            _move_ca_files(ca_dir, base / PREVIOUS_DIR)
            _write_state(base, "old-moved", started, planned, state["old_ca_sha256"], state["new_ca_sha256"])
            phase = "old-moved"
        if phase == "old-moved":
            staging_dir = base / STAGING_DIR
            if staging_dir.exists():
                _move_ca_files(staging_dir, ca_dir)
                shutil.rmtree(staging_dir)
            _write_state(base, "overlap", started, planned, state["old_ca_sha256"], state["new_ca_sha256"])
    rotation = load_rotation(ca_dir)
    assert rotation is not None
    current = x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes())
    roots = store.path / ROOTS_FILE
    atomic_write(roots, _pem(current) + _pem(rotation.previous_certificate), mode=0o644)
    return RotateResult(
        previous=rotation.previous_certificate,
        current=current,
        cross=rotation.cross,
        rotation=rotation,
        roots_path=roots,
        resumed=resumed,
    )


def old_client_certificates(rotation: Rotation, now: dt.datetime) -> list[InventoryEntry]:
    """Client certificates of the retiring CA that could still be presented (unexpired, unrevoked)."""
    return [
        e for e in rotation.previous.entries() if e.kind == "client" and not e.revoked and e.not_after > now
    ]


@dataclass(frozen=True)
class RetireResult:
    """The overlap just ended."""

    retired: x509.Certificate
    archive: Path
    forced: tuple[InventoryEntry, ...]
    roots_path: Path


def replaced_old_certificates(rotation: Rotation, now: dt.datetime) -> list[InventoryEntry]:
    """Old-CA client certificates whose user already holds a valid certificate of the new CA."""
    from pgbatten.lifecycle.clients import newest_by_user

    renewed = newest_by_user(CAStore(rotation.ca_dir).entries())
    return [
        e
        for e in old_client_certificates(rotation, now)
        if e.name in renewed and renewed[e.name].not_after > now
    ]


def retire(
    ca_dir: Path, *, force: bool = False, revoke_replaced: bool = False, now: dt.datetime | None = None
) -> RetireResult:
    """End the overlap: the old CA moves to ``retired/`` and is trusted no more (``renew`` then removes it
    from each server's ``ssl_ca_file``, its CRL and the cross certificate from the chain).

    Refused while unexpired, unrevoked client certificates of the old CA remain, unless ``force``;
    ``revoke_replaced`` first revokes those whose user already has a certificate of the new CA.
    """
    now = now or dt.datetime.now(dt.UTC)
    rotation = load_rotation(ca_dir)
    if rotation is None:
        raise PKIError(f"no CA rotation in progress in {ca_dir}; start one with pgbatten ca rotate")
    if revoke_replaced:
        for entry in replaced_old_certificates(rotation, now):
            rotation.previous.revoke(f"{entry.serial:#x}")
    remaining = old_client_certificates(rotation, now)
    if remaining and not force:
        named = ", ".join(f"{e.name} ({e.serial:#x}, until {e.not_after:%Y-%m-%d})" for e in remaining[:5])
        more = f" and {len(remaining) - 5} more" if len(remaining) > 5 else ""
        users = sorted({e.name for e in remaining})
        raise PKIError(
            f"{len(remaining)} client certificate(s) of the old CA are still valid and not revoked: "
            f"{named}{more}; re-issue them from the new CA ("
            + shlex.join(["pgbatten", "renew", "--client", users[0], "--ca-dir", str(ca_dir)])
            + ", or --all)"
            " and hand out the new bundles, then retire with --revoke-replaced; or pass --force to retire"
            " anyway (their holders are then refused)"
        )
    base = rotation_dir(ca_dir)
    archive = (
        ca_dir
        / RETIRED_DIR
        / f"{now:%Y%m%dT%H%M%SZ}-{_fp(rotation.previous_certificate)[:11].replace(':', '')}"
    )
    with CAStore(ca_dir).lock():
        ensure_private_dir(archive.parent)
        (base / PREVIOUS_DIR).replace(archive)
        for name in (CROSS_FILE, STATE_FILE):
            with contextlib.suppress(FileNotFoundError):
                (base / name).replace(archive / name)
        fsync_directory(archive.parent)
        with contextlib.suppress(OSError):
            base.rmdir()
    store = CAStore(ca_dir)
    roots = store.path / ROOTS_FILE
    atomic_write(roots, store.ca_cert_path.read_bytes(), mode=0o644)
    return RetireResult(
        retired=rotation.previous_certificate, archive=archive, forced=tuple(remaining), roots_path=roots
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fp(cert: x509.Certificate) -> str:
    return fingerprint_sha256(cert)


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "pgbatten CA"
