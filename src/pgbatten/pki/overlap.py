"""A CA directory during a rotation's overlap, as every run reads it: the state, the roots, the CRLs.

:mod:`pgbatten.lifecycle.rotation` starts and ends an overlap (see its docstring for the layout); ``secure``,
``renew`` and the fleet signer only read it, through this module, to issue with the cross certificate and
to hand servers both roots and both CRLs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pgbatten.errors import PKIError
from pgbatten.fsutil import read_bytes_or_none
from pgbatten.pki.authority import CertificateAuthority
from pgbatten.pki.store import CAStore
from pgbatten.pki.trust import Trust
from pgbatten.timestamps import iso, parse_iso

ROTATION_DIR = "rotation"
STATE_FILE = "state.json"
CROSS_FILE = "cross.crt"
PREVIOUS_DIR = "previous"


def rotation_dir(ca_dir: Path) -> Path:
    return ca_dir / ROTATION_DIR


@dataclass(frozen=True)
class Rotation:
    """An overlap in progress."""

    ca_dir: Path
    started_at: dt.datetime
    planned_end: dt.datetime
    cross: x509.Certificate
    previous_certificate: x509.Certificate

    @property
    def previous(self) -> CAStore:
        """The retiring CA's own directory (inventory, CRL, key)."""
        return CAStore(rotation_dir(self.ca_dir) / PREVIOUS_DIR)


def load_rotation(ca_dir: Path) -> Rotation | None:
    """The overlap in progress in ``ca_dir``, None when there is none; ``PKIError`` if it is damaged."""
    base = rotation_dir(ca_dir)
    data = read_bytes_or_none(base / STATE_FILE)
    if data is None:
        return None
    try:
        state = json.loads(data)
        if state.get("phase", "overlap") != "overlap":
            raise PKIError(
                f"a CA rotation in {ca_dir} was interrupted ({state.get('phase')}); run pgbatten ca rotate"
                " again to finish it"
            )
        started = parse_iso(state["started_at"])
        planned = parse_iso(state["planned_end"])
        cross = x509.load_pem_x509_certificate((base / CROSS_FILE).read_bytes())
        previous = x509.load_pem_x509_certificate((base / PREVIOUS_DIR / "ca.crt").read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PKIError(f"the CA rotation state in {base} is damaged: {exc}") from exc
    return Rotation(ca_dir, started, planned, cross, previous)


def state_json(started_at: dt.datetime, planned_end: dt.datetime, old: str, new: str) -> bytes:
    return (
        json.dumps(
            {
                "version": 1,
                "started_at": iso(started_at),
                "planned_end": iso(planned_end),
                "old_ca_sha256": old,
                "new_ca_sha256": new,
            },
            indent=2,
        )
        + "\n"
    ).encode()


def trust_for(store: CAStore, authority: CertificateAuthority | None = None) -> Trust:
    """What the CA directory issues and trusts now: one CA, or the new one with the old during an overlap.

    Without ``authority`` only the root is read (no key, no passphrase): enough to decide what is due.
    """
    root = authority.certificate if authority is not None else _read_root(store)
    rotation = load_rotation(store.path)
    retired = retired_roots(store.path)
    if rotation is None:
        return Trust(root, retired=retired, authority=authority)
    # Every certificate the new CA issues through the overlap carries the cross certificate after it.
    signer = authority.with_cross(rotation.cross) if authority is not None else None
    return Trust(
        root,
        previous=rotation.previous_certificate,
        cross=rotation.cross,
        retired=retired,
        authority=signer,
    )


def _read_root(store: CAStore) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read the CA certificate {store.ca_cert_path}: {exc}") from exc


RETIRED_DIR = "retired"
ROOTS_FILE = "roots.crt"
"""Every root in force, for clients: both during an overlap, the one CA otherwise."""


def retired_roots(ca_dir: Path) -> tuple[x509.Certificate, ...]:
    """The roots of CAs retired here (``retired/*/ca.crt``), oldest first."""
    found: list[x509.Certificate] = []
    directory = ca_dir / RETIRED_DIR
    if not directory.is_dir():
        return ()
    for entry in sorted(directory.iterdir()):
        data = read_bytes_or_none(entry / "ca.crt") if entry.is_dir() else None
        if data is not None:
            with contextlib.suppress(ValueError):
                found.append(x509.load_pem_x509_certificate(data))
    return tuple(found)


def crl_bundle(stores: Sequence[CAStore]) -> bytes | None:
    """The ``ssl_crl_file`` for servers: one CRL per CA in force (PostgreSQL checks every CA in a chain)."""
    parts = [read_bytes_or_none(s.crl_path) for s in stores]
    if any(p is None for p in parts):
        return None
    return b"".join(p for p in parts if p is not None)
