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

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from pgbatten.errors import PKIError
from pgbatten.fsutil import read_bytes_or_none
from pgbatten.lifecycle.facts import RotationFacts, read_ca
from pgbatten.lifecycle.trust import Trust
from pgbatten.pki import CAStore, CertificateAuthority

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


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse(text: Any) -> dt.datetime:
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("timestamp without time zone")
    return value.astimezone(dt.UTC)


def load_rotation(ca_dir: Path) -> Rotation | None:
    """The overlap in progress in ``ca_dir``, None when there is none; ``PKIError`` if it is damaged."""
    base = rotation_dir(ca_dir)
    data = read_bytes_or_none(base / STATE_FILE)
    if data is None:
        return None
    try:
        state = json.loads(data)
        started = _parse(state["started_at"])
        planned = _parse(state["planned_end"])
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
                "started_at": _iso(started_at),
                "planned_end": _iso(planned_end),
                "old_ca_sha256": old,
                "new_ca_sha256": new,
            },
            indent=2,
        )
        + "\n"
    ).encode()


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
        started_at=_iso(rotation.started_at),
        planned_end=_iso(rotation.planned_end),
    )


def trust_for(store: CAStore, authority: CertificateAuthority) -> Trust:
    """What the CA directory issues and trusts now: one CA, or the new one with the old during an overlap."""
    rotation = load_rotation(store.path)
    if rotation is None:
        return Trust(authority)
    return Trust(authority, previous=rotation.previous_certificate, cross=rotation.cross)
