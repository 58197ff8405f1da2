"""Reading ``postmaster.pid`` without trusting its PID, and picking a cluster's binaries, no server needed."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.discover import Cluster, PostmasterPid, binaries_for, read_postmaster_pid
from pgbatten.cluster.osuser import OsUser
from pgbatten.errors import UsageError


def pid_file(data_dir: Path, pid: int, port: int, socket_dir: Path) -> None:
    data_dir.mkdir(exist_ok=True)
    (data_dir / "postmaster.pid").write_text(f"{pid}\n{data_dir}\n1700000000\n{port}\n{socket_dir}\n*\n")


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket that accepts, where a server in another PID namespace would have it."""
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock_dir / ".s.PGSQL.5432"))
        server.listen(4)
        yield sock_dir


def test_a_pid_that_is_no_postmaster_and_no_socket_is_a_stopped_cluster(tmp_path: Path) -> None:
    # This test's own PID: alive, but python, not postgres (a stale file whose PID was reused).
    pid_file(tmp_path / "data", os.getpid(), 5432, tmp_path / "nosock")
    assert read_postmaster_pid(tmp_path / "data") is None


def test_a_pid_that_is_gone_is_a_stopped_cluster(tmp_path: Path) -> None:
    pid_file(tmp_path / "data", 2**22 + 12345, 5432, tmp_path / "nosock")  # above any pid_max default
    assert read_postmaster_pid(tmp_path / "data") is None


def test_a_socket_that_answers_is_a_server_in_another_pid_namespace(tmp_path: Path, listening: Path) -> None:
    pid_file(tmp_path / "data", 1, 5432, listening)
    found = read_postmaster_pid(tmp_path / "data")
    assert found == PostmasterPid(1, tmp_path / "data", 5432, listening, local=False)
    assert found.executable() is None  # /proc/1/exe here is not that server's
    pid_file(tmp_path / "data", 1, 5433, listening)  # another port: not that server's socket
    assert read_postmaster_pid(tmp_path / "data") is None


def test_sql_for_an_owner_without_a_name_here_logs_in_as_postgres(tmp_path: Path, listening: Path) -> None:
    def cluster(owner: OsUser) -> Cluster:
        running = PostmasterPid(1, tmp_path, 5432, listening, local=False)
        return Cluster(
            "c", tmp_path, tmp_path / "postgresql.conf", tmp_path / "pg_hba.conf", tmp_path / "pg_ident.conf",
            17, owner, None, running,
        )  # fmt: skip

    container_owner = OsUser(name="999", uid=999, gid=999, home=Path("/"))
    assert cluster(container_owner).sql().role == "postgres"
    assert cluster(OsUser.current()).sql().role is None


def test_pg_bindir_must_hold_the_clusters_major(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no PostgreSQL server binaries there"):
        binaries_for(17, None, tmp_path)


def test_pg_bindir_wins_over_the_running_servers_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pgbatten.cluster import discover as discover_mod

    given = PgBinaries(tmp_path / "given", 17)
    monkeypatch.setattr(discover_mod, "binaries_in", lambda d: given if d == given.bindir else None)
    running = PostmasterPid(os.getpid(), tmp_path, 5432, None)
    assert binaries_for(17, running, given.bindir) == given
    with pytest.raises(UsageError, match="holds PostgreSQL 17, the cluster is PostgreSQL 15"):
        binaries_for(15, running, given.bindir)
