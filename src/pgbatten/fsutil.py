"""Careful file writes: atomic, with the final mode from the first byte, backups that are never truncated,
writes that go through symbolic links, and the directory locks that keep two runs apart."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pgbatten.errors import BusyError, FileProblem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; runs are then not kept apart.
    fcntl = None  # type: ignore[assignment]


def describe_os_error(exc: OSError) -> str:
    """``strerror`` plus what to do about the errors a user can act on."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{reason} (run as the file's owner or root, or fix its permissions)"
    if exc.errno == errno.EROFS:
        return f"{reason} (the file system is mounted read-only; remount it read-write or edit elsewhere)"
    if exc.errno == errno.ENOSPC:
        return f"{reason} (free some space and run again)"
    return reason


def real_path(path: Path) -> Path:
    """Where writes to ``path`` must go: the final target of a symbolic link, else ``path`` itself.

    Configuration management often links pg_hba.conf or postgresql.conf to a file it owns; replacing the
    link by a regular file would leave the managed file (the one that counts next time) unchanged.
    """
    return Path(os.path.realpath(path)) if path.is_symlink() else path


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
    behalf of the cluster's OS user. A symbolic link is written through (its target is replaced, the link
    stays).
    """
    path = real_path(Path(path))
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise FileProblem(directory, f"cannot create a file here: {describe_os_error(exc)}") from exc
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
        fsync_directory(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FileProblem(path, f"cannot write: {describe_os_error(exc)}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_directory(directory: Path) -> None:
    """Make the renames and removals in ``directory`` durable (best effort: not every file system can)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_file(path: Path) -> None:
    """Remove ``path`` (through a symbolic link: the target goes, as it was what we created); gone is fine."""
    target = real_path(path)
    try:
        target.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileProblem(target, f"cannot remove: {describe_os_error(exc)}") from exc


def read_bytes_or_none(path: Path) -> bytes | None:
    """The file's bytes, None when it does not exist; any other failure is a ``FileProblem``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileProblem(path, f"cannot read: {describe_os_error(exc)}") from exc


def timestamp() -> str:
    """A UTC timestamp safe for file names, sortable, with microseconds so two runs never collide."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def backup_file(path: Path, stamp: str) -> Path:
    """Copy ``path`` beside itself as ``NAME.pgbatten-STAMP.bak``, keeping mode and owner; return the copy.

    The copy is written like any other file (temp file, fsync, rename), so a full disk or a kill leaves no
    truncated backup that looks whole. A symbolic link is backed up as its target, beside the target.
    """
    source = real_path(path)
    backup = source.with_name(f"{source.name}.pgbatten-{stamp}.bak")
    try:
        st = source.stat()
        data = source.read_bytes()
    except OSError as exc:
        raise FileProblem(source, f"cannot back up: {describe_os_error(exc)}") from exc
    try:
        atomic_write(backup, data, mode=stat.S_IMODE(st.st_mode))
    except FileProblem as exc:
        raise FileProblem(source, f"cannot back up to {backup}: {exc.reason}") from exc
    with contextlib.suppress(OSError):
        os.chown(backup, st.st_uid, st.st_gid)
    with contextlib.suppress(OSError):
        os.utime(backup, ns=(st.st_atime_ns, st.st_mtime_ns))
    return backup


def stale_temp_files(directory: Path, names: Iterable[str]) -> list[Path]:
    """Temp files ``atomic_write`` left for ``names`` in ``directory`` when a run was killed mid-write."""
    wanted = {name for name in names}
    found: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and match.group(1) in wanted and entry.is_file() and not entry.is_symlink():
            found.append(entry)
    return sorted(found)


# mkstemp's random part is 8 characters of [a-z0-9_].
_TEMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")


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
        raise FileProblem(path, f"cannot create a private directory: {describe_os_error(exc)}") from exc


# Locks this process holds, by (device, inode) of the directory: a second open file description of the same
# directory would conflict with our own flock, so nested holders of one lock share it.
_HELD: dict[tuple[int, int], int] = {}
LOCK_POLL = 0.1


@contextlib.contextmanager
def directory_lock(path: Path, *, wait: float, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the directory ``path`` (``flock`` on the directory itself, no lock file).

    Another pgbatten run holding it is waited for up to ``wait`` seconds, then a ``BusyError`` names
    ``what`` (e.g. "cluster /srv/pg") and the path. The lock ends with the process, also on SIGKILL, so a
    killed run never blocks the next one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise FileProblem(path, f"cannot open to lock it: {describe_os_error(exc)}") from exc
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in _HELD or fcntl is None:
            _HELD[key] = _HELD.get(key, 0) + 1
            try:
                yield
            finally:
                _HELD[key] -= 1
                if not _HELD[key]:
                    del _HELD[key]
            return
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"another pgbatten run is changing {what} ({path}); waited {wait:.0f} s for it to"
                        " finish: run again when it is done"
                    ) from None
                time.sleep(LOCK_POLL)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
