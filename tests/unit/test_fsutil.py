"""Atomic writes: the final mode from the first byte, no temp files left behind, backups kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgbatten.errors import FileProblem
from pgbatten.fsutil import atomic_write, backup_file, ensure_private_dir


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
