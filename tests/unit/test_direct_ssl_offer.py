"""Offering ``sslnegotiation=direct`` to clients only where the server is known to take it (PostgreSQL 17+):
INSTALL.md carries the direct line for a bundle issued with the cluster named, whose major says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbatten.pki import CAStore, bundle
from pgbatten.pki import operations as ops
from pgbatten.pki.served import ClusterView
from tests.unit.test_pki_operations import view

DIRECT = "sslnegotiation=direct"


@pytest.fixture
def store(tmp_path: Path) -> CAStore:
    store = CAStore(tmp_path / "ca")
    store.init()
    return store


def test_install_md_offers_direct_ssl_only_when_asked() -> None:
    plain = bundle.render_install_md("alice", "db.example.com", 5433, "app")
    direct = bundle.render_install_md("alice", "db.example.com", 5433, "app", direct_ssl=True)
    assert DIRECT not in plain
    line = "host=db.example.com port=5433 dbname=app user=alice sslmode=verify-full sslnegotiation=direct"
    assert line in direct.splitlines()
    assert "libpq 17 or newer" in direct
    assert "libpq 16 and older refuse" in direct
    # Everything else is the same text: the offer is an addition, never a replacement.
    assert direct.replace(bundle._direct_ssl_section(line.removesuffix(f" {DIRECT}")), "") == plain


@pytest.mark.parametrize(
    ("cluster", "offered"),
    [
        (None, False),  # no cluster named: the server's version is unknown
        (view(major=None), False),
        (view(major=15), False),
        (view(major=16), False),
        (view(major=17), True),
        (view(major=18), True),
    ],
)
def test_direct_ssl_is_offered_only_for_a_cluster_of_17_or_later(
    store: CAStore, tmp_path: Path, cluster: ClusterView | None, offered: bool
) -> None:
    request = ops.prepare_client_bundle(
        store, "alice", out_dir=tmp_path / "alice", key_type="ecdsa", days=30,
        server_host="db.example.com", port=5432, dbname="postgres", force=False, p12_password=b"pw",
        cluster=cluster,
    )  # fmt: skip
    assert request.direct_ssl is offered
    issued = ops.issue_client_bundle(store, store.load(), request)
    assert (DIRECT in issued.bundle.install_md_path.read_text()) is offered
