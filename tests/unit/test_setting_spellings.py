"""Every reader of a stopped cluster's files takes ``ssl`` and pg_hba.conf the way that cluster's PostgreSQL
does: any boolean spelling PostgreSQL accepts (``t``, ``ye``, ``TRUE``), and the pg_hba.conf rules of the
cluster's own major version, not the newest ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbatten.cluster.discover import discover
from pgbatten.errors import ParseError
from pgbatten.lifecycle.facts import ClusterFacts
from pgbatten.pki import ClusterRef
from pgbatten.pki.served import inspect_cluster


def data_dir(tmp_path: Path, major: int, conf: str, hba: str = "local all all peer\n") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "PG_VERSION").write_text(f"{major}\n")
    (tmp_path / "postgresql.conf").write_text(conf)
    (tmp_path / "pg_hba.conf").write_text(hba)
    return tmp_path


@pytest.mark.parametrize(
    ("word", "on"), [("t", True), ("ye", True), ("TRUE", True), ("of", False), ("0", False)]
)
def test_ssl_is_read_in_any_spelling_postgres_accepts(tmp_path: Path, word: str, on: bool) -> None:
    # "t" and "ye" used to read as off: a hand-written set of four words stood in for PostgreSQL's parse_bool.
    view = inspect_cluster(discover(pgdata=data_dir(tmp_path, 15, f"SSL = {word}\n")), None)
    assert view.ssl is on
    facts = ClusterFacts(ref=ClusterRef.data_directory(tmp_path), label="db", settings={"ssl": word})
    assert facts.ssl_on is on


def test_pg_hba_is_read_by_the_clusters_own_major(tmp_path: Path) -> None:
    # A backslash continues a line from PostgreSQL 14 only: 13 reads it as a token and rejects the file, so
    # the certificate rule below does not exist for that server.
    hba = "hostssl all app 0.0.0.0/0 \\\n    cert\n"
    newer = inspect_cluster(discover(pgdata=data_dir(tmp_path / "16", 16, "", hba)), None)
    assert [r.users for r in newer.cert_rules] == [("app",)]
    with pytest.raises(ParseError, match="invalid authentication method"):
        inspect_cluster(discover(pgdata=data_dir(tmp_path / "13", 13, "", hba)), None)
