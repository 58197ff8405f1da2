"""Shared fixtures: real PostgreSQL clusters in temp dirs, and an isolated CA directory per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgbatten.cluster.binaries import PgBinaries, find_binaries
from pgbatten.cluster.temp import TempCluster
from pgbatten.errors import ClusterError

# The reader's starting point: password logins over TCP, with a plaintext `host` rule above the `hostssl`
# one, so that the hostssl rule is shadowed and plaintext stays open (pg_hba.conf is first match).
SEED_HBA = """\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     peer
host    all             all             127.0.0.1/32            md5
host    all             all             ::1/128                 md5
hostssl all             all             0.0.0.0/0               scram-sha-256
local   replication     all                                     peer
host    replication     all             127.0.0.1/32            md5
"""


@pytest.fixture(scope="session")
def pg_binaries() -> PgBinaries:
    try:
        return find_binaries()
    except ClusterError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed: {exc}")


@pytest.fixture
def make_cluster(pg_binaries: PgBinaries) -> Iterator[Callable[..., TempCluster]]:
    """Start clusters on demand; all are stopped and removed at the end of the test."""
    started: list[TempCluster] = []

    def factory(**kwargs: Any) -> TempCluster:
        cluster = TempCluster(binaries=pg_binaries, **kwargs)
        started.append(cluster)
        cluster.init()
        cluster.start()
        return cluster

    yield factory
    for cluster in reversed(started):
        cluster.cleanup()


@pytest.fixture
def seed_cluster(make_cluster: Callable[..., TempCluster]) -> TempCluster:
    """A running cluster as the seed's reader has it: ssl off, md5 over TCP, a shadowed hostssl line."""
    return make_cluster(hba=SEED_HBA, settings={"password_encryption": "md5"})


@pytest.fixture
def ca_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CA directory for this test only; also exported so the CLI never touches the real one."""
    path = tmp_path / "ca"
    monkeypatch.setenv("PGBATTEN_CA_DIR", str(path))
    return path
