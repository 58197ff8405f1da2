"""Careful file writes: atomic, with the final mode from the first byte, and backups that are never lost."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

from pgbatten.errors import FileProblem


def atomic_write(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The temporary file is created in the target directory with ``mode`` already applied (``mkstemp`` makes
    it 0600, and we only ever widen after the content is written), so a private key is never briefly
    readable by others. ``owner`` is a (uid, gid) pair applied before the rename, used when root writes on
    behalf of the cluster's OS user.
    """
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise FileProblem(directory, f"cannot create a file here: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if owner is not None:
            os.chown(tmp, owner[0], owner[1])
        os.chmod(tmp, mode)
        tmp.replace(path)
        _fsync_directory(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FileProblem(path, f"cannot write: {exc.strerror}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_bytes_or_none(path: Path) -> bytes | None:
    """The file's bytes, None when it does not exist; any other failure is a ``FileProblem``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileProblem(path, exc.strerror or "cannot read") from exc


def timestamp() -> str:
    """A UTC timestamp safe for file names, sortable, with microseconds so two runs never collide."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def backup_file(path: Path, stamp: str) -> Path:
    """Copy ``path`` beside itself as ``NAME.pgbatten-STAMP.bak``, keeping mode and owner; return the copy."""
    backup = path.with_name(f"{path.name}.pgbatten-{stamp}.bak")
    try:
        shutil.copy2(path, backup)
        st = path.stat()
        with contextlib.suppress(PermissionError):
            os.chown(backup, st.st_uid, st.st_gid)
    except OSError as exc:
        raise FileProblem(path, f"cannot back up: {exc.strerror}") from exc
    return backup


def ensure_private_dir(path: Path, owner: tuple[int, int] | None = None) -> None:
    """Create ``path`` (and parents) with mode 0700 if it is missing.

    An existing directory keeps its mode: ``--ca-dir .`` or ``--ca-dir ~`` must never chmod the user's home.
    The secrets inside are protected by their own 0600 modes.
    """
    if path.is_dir():
        return
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        if owner is not None:
            os.chown(path, owner[0], owner[1])
    except OSError as exc:
        raise FileProblem(path, f"cannot create a private directory: {exc.strerror}") from exc
