"""Locating PostgreSQL server binaries the way packagers lay them out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgbatten.errors import ClusterError

SUPPORTED_MAJORS = range(12, 19)


@dataclass(frozen=True)
class PgBinaries:
    """A directory holding ``postgres``, ``initdb`` and ``pg_ctl`` of one major version."""

    bindir: Path
    major: int

    def path(self, name: str) -> Path:
        return self.bindir / name


def _major_of(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not os.access(postgres, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _candidate_dirs() -> list[Path]:
    candidates: list[Path] = []
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    # Debian/Ubuntu keep every installed major side by side; prefer the newest.
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    seen: set[Path] = set()
    unique = []
    for c in candidates:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def find_binaries(major: int | None = None) -> PgBinaries:
    """Find server binaries (on PATH, via ``pg_config --bindir``, or in /usr/lib/postgresql/*/bin).

    With ``major``, only that version is accepted (a cluster must be driven by its own version's tools).
    """
    for bindir in _candidate_dirs():
        found = _major_of(bindir)
        if found is None or found not in SUPPORTED_MAJORS:
            continue
        if major is not None and found != major:
            continue
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return PgBinaries(bindir=bindir, major=found)
    wanted = f"PostgreSQL {major}" if major is not None else "PostgreSQL 12 to 18"
    raise ClusterError(
        f"no {wanted} server binaries found"
        " (looked on PATH, pg_config --bindir and /usr/lib/postgresql/*/bin)"
    )
