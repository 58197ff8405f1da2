"""Shared fixtures: real PostgreSQL clusters in temp dirs, an isolated CA directory per test, and an
environment that cannot leak the machine's home directory or ``PG*`` variables into any test."""

from __future__ import annotations

import os
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


REAL_HOME = Path.home()
"""The home directory of whoever runs the tests, read before any test isolates ``HOME``: where tools such as
the local Maven repository live. Nothing pgbatten does may depend on it."""


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs with an empty home directory and no ``PG*`` variable (``PGBATTEN_DEBUG`` aside).

    libpq reads ``~/.postgresql/postgresql.crt``, ``~/.pgpass`` and ``PGSSLMODE`` & co. for whatever a
    connection string leaves out; a test that passes only because of what this machine holds proves nothing.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("PG") and name != "PGBATTEN_DEBUG":
            monkeypatch.delenv(name)
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "OPENSSL_CONF", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


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
