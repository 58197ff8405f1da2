"""Locating PostgreSQL server binaries the way packagers lay them out.

A running server is asked first (its postmaster's executable names its own directory), then an explicit
``--pg-bindir``, then PATH, ``pg_config --bindir`` and Debian's ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pgbatten.errors import ClusterError

SUPPORTED_MAJORS = range(12, 19)
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_TOOLS = ("initdb", "pg_ctl")


@dataclass(frozen=True)
class PgBinaries:
    """A directory holding ``postgres``, ``initdb`` and ``pg_ctl`` of one major version."""

    bindir: Path
    major: int

    def path(self, name: str) -> Path:
        return self.bindir / name

    def psql(self) -> Path:
        """The psql beside these binaries, else the one on PATH (Debian ships it in another package)."""
        beside = self.path("psql")
        return beside if os.access(beside, os.X_OK) else psql_on_path()


def psql_on_path() -> Path:
    found = shutil.which("psql")
    if found is None:
        raise ClusterError("psql not found; install the PostgreSQL client")
    return Path(found)


@cache
def _version_of(postgres: Path, mtime_ns: int) -> int | None:
    # Keyed on the executable's mtime, so an upgrade in place is noticed; ``postgres --version`` costs a fork.
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def major_of(bindir: Path) -> int | None:
    """The major version of the ``postgres`` in ``bindir``; None when there is none that runs."""
    postgres = bindir / "postgres"
    if not os.access(postgres, os.X_OK):
        return None
    try:
        mtime = postgres.stat().st_mtime_ns
    except OSError:
        return None
    return _version_of(postgres.resolve(), mtime)


def _debian_dirs() -> list[Path]:
    # Debian/Ubuntu keep every installed major side by side; prefer the newest.
    return sorted(
        DEBIAN_ROOT.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )


def candidate_dirs(first: Iterable[Path] = ()) -> list[Path]:
    """Directories that may hold server binaries, ``first`` first, each once."""
    candidates: list[Path] = list(first)
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
    candidates.extend(_debian_dirs())
    seen: set[Path] = set()
    unique = []
    for c in candidates:
        key = c.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


def binaries_in(bindir: Path) -> PgBinaries | None:
    """The installation in ``bindir`` if it has a supported ``postgres`` with initdb and pg_ctl."""
    found = major_of(bindir)
    if found is None or found not in SUPPORTED_MAJORS:
        return None
    if not all(os.access(bindir / tool, os.X_OK) for tool in SERVER_TOOLS):
        return None
    return PgBinaries(bindir=bindir, major=found)


def find_all_binaries(first: Sequence[Path] = ()) -> list[PgBinaries]:
    """Every supported installation found, in the order :func:`find_binaries` prefers them."""
    found = []
    for bindir in candidate_dirs(first):
        binaries = binaries_in(bindir)
        if binaries is not None:
            found.append(binaries)
    return found


def search_binaries(major: int | None = None, *, first: Sequence[Path] = ()) -> PgBinaries | None:
    """Like :func:`find_binaries`, None when there are none."""
    for bindir in candidate_dirs(first):
        binaries = binaries_in(bindir)
        if binaries is not None and (major is None or binaries.major == major):
            return binaries
    return None


def not_found(major: int | None, first: Sequence[Path] = ()) -> ClusterError:
    wanted = f"PostgreSQL {major}" if major is not None else "PostgreSQL 12 to 18"
    looked = "".join(f"{d}, " for d in first)
    return ClusterError(
        f"no {wanted} server binaries found"
        f" (looked in {looked}on PATH, pg_config --bindir and {DEBIAN_ROOT}/*/bin; name the directory"
        " with --pg-bindir DIR)"
    )


def find_binaries(major: int | None = None, *, first: Sequence[Path] = ()) -> PgBinaries:
    """Find server binaries: in ``first`` (a running server's own directory, ``--pg-bindir``), on PATH, via
    ``pg_config --bindir``, or in /usr/lib/postgresql/*/bin.

    With ``major``, only that version is accepted (a cluster must be driven by its own version's tools).
    """
    found = search_binaries(major, first=first)
    if found is None:
        raise not_found(major, first)
    return found
