"""The certificate operations behind ``pgbatten cert``/``crl`` as a library: they return results, print
nothing, and refuse before anything is written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pgbatten.errors import FileProblem, PKIError, UsageError
from pgbatten.pki import CAStore, CertificateAuthority, KeyType, listing
from pgbatten.pki import operations as ops
from pgbatten.pki.records import ClusterRef
from pgbatten.pki.served import CertRule, ClusterView

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> CAStore:
    store = CAStore(tmp_path / "ca")
    store.init()
    return store


def request(store: CAStore, user: str, out: Path, **overrides: object) -> ops.BundleRequest:
    args: dict[str, object] = {
        "out_dir": out,
        "key_type": "ecdsa",
        "days": 30,
        "server_host": "db.example.com",
        "port": 6432,
        "dbname": "app",
        "force": False,
    }
    args.update(overrides)
    return ops.prepare_client_bundle(store, user, **args)  # type: ignore[arg-type]


def test_issue_a_bundle_returns_what_was_done(store: CAStore, tmp_path: Path) -> None:
    ca = store.load()
    first = ops.issue_client_bundle(store, ca, request(store, "alice", tmp_path / "a1"))
    assert first.password_generated and first.p12_password
    assert first.earlier == ()
    assert first.bundle.directory == tmp_path / "a1"
    assert "host=db.example.com port=6432 dbname=app" in first.bundle.install_md_path.read_text()
    assert store.entries() == [first.entry]

    second = ops.issue_client_bundle(
        store, ca, request(store, "alice", tmp_path / "a2", p12_password=b"pw", key_type=KeyType.RSA_2048)
    )
    assert not second.password_generated and second.p12_password == b"pw"
    assert second.earlier == (first.entry,)


def test_prepare_refuses_before_the_ca_is_touched(store: CAStore, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(FileProblem, match="already exists"):
        request(store, "alice", tmp_path / "taken")
    with pytest.raises(UsageError, match="unknown key type"):
        request(store, "alice", tmp_path / "a", key_type="dsa")
    with pytest.raises(UsageError, match="invalid port"):
        request(store, "alice", tmp_path / "a", port=0)
    with pytest.raises(UsageError, match="not usable as a directory name"):
        request(store, "../x", None)  # type: ignore[arg-type]
    assert store.entries() == []


def test_server_host_defaults_to_the_newest_server_certificate(store: CAStore) -> None:
    ca = store.load()
    store.record(ca.issue_server(["old.example.com"]), "server", "old.example.com")
    store.record(ca.issue_server(["new.example.com"]), "server", "new.example.com")
    assert ops.default_server_host(store) == "new.example.com"


def test_select_revocation_follows_the_store_rule(store: CAStore) -> None:
    ca = store.load()
    bob = store.record(ca.issue_client("bob"), "client", "bob")
    server = store.record(ca.issue_server(["bob"]), "server", "bob")
    assert ops.select_revocation(store, "bob") == [bob]
    assert ops.select_revocation(store, f"{server.serial:#x}") == [server]
    with pytest.raises(PKIError, match="no certificate for 'carol'"):
        ops.select_revocation(store, "carol")
    result = ops.revoke(store, ca, "bob")
    assert [e.serial for e in result.revoked] == [bob.serial]
    assert result.proof_serials == (bob.serial,)
    assert result.crl.entries == 1
    with pytest.raises(PKIError, match="already revoked; install the CRL with 'X'"):
        ops.select_revocation(store, "bob", refresh_hint="X")


def test_revoking_an_ended_certificate_leaves_it_out_of_crl_and_proofs(tmp_path: Path) -> None:
    long_ago = NOW - dt.timedelta(days=400)
    store = CAStore(tmp_path / "old-ca")
    ca = store.init(now=long_ago)
    old = store.record(ca.issue_client("old", days=1, now=long_ago), "client", "old")
    result = ops.revoke(store, ca, "old")
    assert [e.serial for e in result.revoked] == [old.serial]
    assert result.crl.entries == 0
    assert result.proof_serials == ()
    # Left out on purpose, so no warning that the CRL is behind the inventory.
    assert listing.inventory_warnings(store.entries(), store.load_crl()) == []


def test_inventory_warnings_name_what_to_do(store: CAStore, tmp_path: Path) -> None:
    ca: CertificateAuthority = store.load()
    soon = store.record(ca.issue_client("soon", days=5), "client", "soon")
    now = dt.datetime.now(dt.UTC)
    warnings = listing.inventory_warnings(store.entries(), None, now)
    assert len(warnings) == 1
    assert warnings[0].code == "expiring"
    assert f"{soon.serial:#x} of soon ends in 4 days" in warnings[0].message
    assert "pgbatten cert client soon --force" in warnings[0].message
    assert listing.entry_status(soon, now) == "valid, 4 days left"


# -- what a named server would do with a client certificate ------------------------------------------------


def view(**overrides: object) -> ClusterView:
    fields: dict[str, object] = {
        "label": "15/main",
        "ref": ClusterRef("--cluster", "15/main"),
        "port": 5433,
        "ssl": True,
        "cert_file": Path("/etc/postgresql/15/main/pgbatten-server.crt"),
        "served": None,
        "ca_file": Path("/etc/postgresql/15/main/pgbatten-ca.crt"),
        "trusts_ca": True,
        "cert_rules": (CertRule(7, ("all",), "cert"),),
    }
    fields.update(overrides)
    return ClusterView(**fields)  # type: ignore[arg-type]


def test_client_certificate_warnings_say_why_the_server_would_not_use_it() -> None:
    assert view().client_certificate_warnings("alice") == []
    assert "ssl is off" in view(ssl=False).client_certificate_warnings("alice")[0]
    [no_ca] = view(ca_file=None).client_certificate_warnings("alice")
    assert "ssl_ca_file is not set" in no_ca and "pgbatten secure --client-auth cert" in no_ca
    assert "does not hold this CA" in view(trusts_ca=False).client_certificate_warnings("alice")[0]
    only_bob = view(cert_rules=(CertRule(3, ("bob", '"Carol"'), "scram-sha-256"),))
    [no_rule] = only_bob.client_certificate_warnings("alice")
    assert "no pg_hba.conf rule of 15/main logs 'alice' in by certificate" in no_rule
    assert only_bob.client_certificate_warnings("Carol") == []
    # Group membership and @files cannot be decided from files: no warning then.
    assert view(cert_rules=(CertRule(3, ("+admins",), "cert"),)).client_certificate_warnings("x") == []


def test_cert_client_takes_host_and_port_from_the_cluster(store: CAStore, tmp_path: Path) -> None:
    ca = store.load()
    served = ca.issue_server(["db.example.com", "10.0.0.5"]).certificate
    request = ops.prepare_client_bundle(
        store, "alice", out_dir=tmp_path / "a", key_type="ecdsa", days=30, server_host=None, port=None,
        dbname="postgres", force=False, cluster=view(served=served),
    )  # fmt: skip
    assert (request.server_host, request.port, request.warnings) == ("db.example.com", 5433, ())
    other = ops.prepare_client_bundle(
        store, "alice", out_dir=tmp_path / "a", key_type="ecdsa", days=30, server_host="elsewhere.example",
        port=6000, dbname="postgres", force=False, cluster=view(served=served, ca_file=None),
    )  # fmt: skip
    assert other.port == 6000
    assert any("ssl_ca_file is not set" in w for w in other.warnings)
    assert any("does not name elsewhere.example" in w for w in other.warnings)
