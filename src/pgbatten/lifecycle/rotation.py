"""CA rotation with an overlap (``pgbatten ca rotate`` / ``ca retire``)."""

from __future__ import annotations

from pathlib import Path

from pgbatten.lifecycle.facts import RotationFacts


def read_rotation(ca_dir: Path) -> RotationFacts | None:
    """The rotation in progress in ``ca_dir``, or None."""
    return None
