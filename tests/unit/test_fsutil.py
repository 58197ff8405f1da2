"""Atomic writes: the final mode from the first byte, no temp files left behind, backups kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgbatten.errors import BusyError, FileProblem
from pgbatten.fsutil import (
    atomic_write,
    backup_file,
    directory_lock,
    ensure_private_dir,
    remove_file,
    stale_temp_files,
)


def test_key_is_never_readable_by_others_even_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_replace = Path.replace

    def spy(self: Path, target: str | os.PathLike[str]) -> Path:
        seen.append(stat.S_IMODE(self.stat().st_mode))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    target = tmp_path / "server.key"
    atomic_write(target, b"secret", mode=0o600)
    assert seen == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"secret"


def test_replacing_keeps_readers_whole_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "postgresql.conf"
    target.write_bytes(b"old")
    atomic_write(target, b"new contents", mode=0o644)
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["postgresql.conf"]


def test_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "pg_hba.conf"
    target.write_bytes(b"original")

    def boom(self: Path, target: str | os.PathLike[str]) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", boom)
    with pytest.raises(FileProblem, match="No space left on device"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["pg_hba.conf"]


def test_unwritable_directory_is_a_file_problem(tmp_path: Path) -> None:
    with pytest.raises(FileProblem):
        atomic_write(tmp_path / "missing-dir" / "x", b"")


def test_backup_keeps_content_and_mode(tmp_path: Path) -> None:
    target = tmp_path / "postgresql.conf"
    target.write_bytes(b"content")
    target.chmod(0o640)
    backup = backup_file(target, "20261128T000000.000000Z")
    assert backup.name == "postgresql.conf.pgbatten-20261128T000000.000000Z.bak"
    assert backup.read_bytes() == b"content"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640


def test_private_dir_is_created_0700_and_an_existing_one_left_alone(tmp_path: Path) -> None:
    created = tmp_path / "a" / "ca"
    ensure_private_dir(created)
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    home_like = tmp_path / "home"
    home_like.mkdir()
    home_like.chmod(0o755)
    ensure_private_dir(home_like)
    assert stat.S_IMODE(home_like.stat().st_mode) == 0o755


def test_private_dir_on_a_file_is_a_file_problem(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(FileProblem):
        ensure_private_dir(target)


def test_a_full_disk_during_the_backup_leaves_no_truncated_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "postgresql.conf"
    target.write_bytes(b"x" * 10_000)
    real_fdopen = os.fdopen

    class HalfWritten:
        def __init__(self, handle: object) -> None:
            self.handle = handle

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])  # type: ignore[attr-defined]
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWritten(real_fdopen(fd, mode)))
    with pytest.raises(FileProblem, match=r"cannot back up .*No space left on device"):
        backup_file(target, "20261128T000000.000000Z")
    assert [p.name for p in tmp_path.iterdir()] == ["postgresql.conf"]


def test_a_symlinked_file_is_written_and_backed_up_through_the_link(tmp_path: Path) -> None:
    managed = tmp_path / "managed"
    managed.mkdir()
    real = managed / "pg_hba.conf"
    real.write_bytes(b"old rules\n")
    real.chmod(0o640)
    link = tmp_path / "pg_hba.conf"
    link.symlink_to(real)
    backup = backup_file(link, "20261128T000000.000000Z")
    assert backup.parent == managed and backup.read_bytes() == b"old rules\n"
    atomic_write(link, b"new rules\n", mode=0o640)
    assert link.is_symlink() and link.resolve() == real
    assert real.read_bytes() == b"new rules\n"
    remove_file(link)
    assert not real.exists()


def test_a_held_directory_lock_makes_a_second_holder_wait_then_refuse(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pgbatten.fsutil import directory_lock\n"
            "with directory_lock(Path(sys.argv[1]), wait=0, what='x'):\n"
            "    print('held', flush=True); time.sleep(30)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(BusyError, match=r"another pgbatten run is changing cluster /x .*waited 0 s"),
            directory_lock(tmp_path, wait=0.2, what="cluster /x"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with its holder, even on SIGKILL: the next run gets it at once.
    with directory_lock(tmp_path, wait=0, what="cluster /x"), directory_lock(tmp_path, wait=0, what="again"):
        pass  # and one process may nest it


def test_stale_temp_files_are_found_only_for_the_names_asked(tmp_path: Path) -> None:
    (tmp_path / ".server.key.abcd_123.tmp").write_bytes(b"")
    (tmp_path / ".other.conf.abcd_123.tmp").write_bytes(b"")
    (tmp_path / "server.key").write_bytes(b"")
    assert [p.name for p in stale_temp_files(tmp_path, ["server.key"])] == [".server.key.abcd_123.tmp"]
