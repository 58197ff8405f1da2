"""The cluster layer against real PostgreSQL: discovery, SQL as the owner, the config-outside layout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from pgbatten.cluster.discover import CONF_ROOT_ENV, discover
from pgbatten.cluster.temp import TempCluster, processes_naming
from pgbatten.errors import ClusterError, UsageError

pytestmark = pytest.mark.integration


def test_discover_running_cluster_by_pgdata(seed_cluster: TempCluster) -> None:
    found = discover(pgdata=seed_cluster.data_dir)
    assert found.running is not None
    assert found.running.port == seed_cluster.port
    assert found.config_file == seed_cluster.config_file
    assert found.hba_file == seed_cluster.hba_file
    assert found.major == seed_cluster.bin.major
    assert found.owner.uid == seed_cluster.owner.uid
    assert found.sql().value("SELECT current_setting('port')") == str(seed_cluster.port)


def test_sql_keeps_nulls_empty_strings_and_quotes(seed_cluster: TempCluster) -> None:
    rows = seed_cluster.sql().query(
        "SELECT NULL::text, '', :'v' UNION ALL SELECT 'a\tb', 'x', 'y'", {"v": "it's; DROP"}
    )
    assert rows == [(None, "", "it's; DROP"), ("a\tb", "x", "y")]


def test_discover_debian_layout(
    make_cluster: Callable[..., TempCluster], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cluster = make_cluster(config_outside_pgdata=True)
    # Lay out /etc/postgresql/VERSION/NAME the way postgresql-common does, pointing at the temp config.
    root = tmp_path / "etc-postgresql"
    (root / str(cluster.bin.major)).mkdir(parents=True)
    (root / str(cluster.bin.major) / "main").symlink_to(cluster.conf_dir)
    monkeypatch.setenv(CONF_ROOT_ENV, str(root))
    found = discover(cluster=f"{cluster.bin.major}/main")
    assert found.data_dir == cluster.data_dir
    assert found.hba_file == cluster.hba_file
    assert found.config_file == cluster.config_file
    assert found.running is not None


def test_discover_stopped_cluster(make_cluster: Callable[..., TempCluster]) -> None:
    cluster = make_cluster()
    cluster.stop()
    found = discover(pgdata=cluster.data_dir)
    assert found.running is None
    assert found.hba_file == cluster.data_dir / "pg_hba.conf"
    with pytest.raises(ClusterError, match="not running"):
        found.require_running()


def test_discover_rejects_non_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="not a PostgreSQL data directory"):
        discover(pgdata=tmp_path)
    with pytest.raises(UsageError):
        discover(cluster="main")


def test_sql_keeps_empty_results_and_newlines(seed_cluster: TempCluster) -> None:
    sql = seed_cluster.sql()
    assert sql.query("SELECT ''") == [("",)]
    assert sql.query("SELECT 1 WHERE false") == []
    assert sql.value("SELECT E'a\\nb'") == "a\nb"


def test_a_temp_cluster_is_the_cluster_discover_finds(seed_cluster: TempCluster) -> None:
    # One description for both: what the throwaway cluster says of itself is what discovery finds.
    assert seed_cluster.cluster == discover(pgdata=seed_cluster.data_dir)
    seed_cluster.stop()
    stopped = discover(pgdata=seed_cluster.data_dir)
    assert seed_cluster.cluster.running is None
    # A stopped server cannot say where its binaries are: found where they are looked for, or none.
    assert stopped.binaries in (seed_cluster.bin, None)
    assert replace(stopped, binaries=seed_cluster.bin) == seed_cluster.cluster


def test_clusters_copied_from_one_template_are_independent(make_cluster: Callable[..., TempCluster]) -> None:
    first, second = make_cluster(), make_cluster()
    assert first.data_dir != second.data_dir and first.port != second.port
    first.sql().query("CREATE TABLE only_here (x int)")
    assert first.sql().value("SELECT to_regclass('only_here') IS NOT NULL") == "t"
    assert second.sql().value("SELECT to_regclass('only_here') IS NOT NULL") == "f"
    # PostgreSQL insists on these: a copy must keep the owner and the 0700 of the data directory.
    assert first.data_dir.stat().st_uid == first.owner.uid
    assert first.data_dir.stat().st_mode & 0o777 == 0o700


def test_cleanup_ends_a_server_pg_ctl_cannot_find(make_cluster: Callable[..., TempCluster]) -> None:
    # What an interrupt during `pg_ctl start` leaves: a postmaster running before postmaster.pid exists.
    cluster = make_cluster()
    (cluster.data_dir / "postmaster.pid").rename(cluster.root / "postmaster.pid.away")
    assert processes_naming(cluster.root)
    cluster.cleanup()
    assert processes_naming(cluster.root) == []
    assert not cluster.root.exists()
