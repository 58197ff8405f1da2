"""CA rotation in the CA directory, without a server: the new CA, the cross certificate (judged by
OpenSSL's own verifier), an interrupted rotation that a re-run finishes, and retire's refusals."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.certfacts import issued_by
from pgbatten.errors import PKIError
from pgbatten.lifecycle import rotation as rot
from pgbatten.lifecycle.rotation import next_common_name, replaced_old_certificates, retire, rotate
from pgbatten.pki import CAStore, CertificateAuthority
from pgbatten.pki.overlap import load_rotation, trust_for

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> CAStore:
    store = CAStore(tmp_path / "ca")
    ca = store.init()
    store.record(ca.issue_client("alice"), "client", "alice")
    store.record(ca.issue_server(["db.example.test"]), "server", "db.example.test")
    return store


def test_next_common_name() -> None:
    assert next_common_name("pgbatten CA") == "pgbatten CA G2"
    assert next_common_name("pgbatten CA G2") == "pgbatten CA G3"
    assert len(next_common_name("x" * 64)) <= 64


def test_rotate_lays_out_both_cas_and_a_cross_certificate(store: CAStore, tmp_path: Path) -> None:
    old = store.load()
    result = rotate(store.path)
    new = store.load()
    assert new.certificate != old.certificate
    assert new.certificate.subject.rfc4514_string() == "CN=pgbatten CA G2"
    assert result.previous == old.certificate
    previous = CAStore(store.path / "rotation" / "previous")
    assert previous.load().certificate == old.certificate
    assert [e.name for e in previous.entries()] == ["alice", "db.example.test"]  # the old inventory moved
    assert store.entries() == []
    cross = result.cross
    assert cross.subject == new.certificate.subject and cross.public_key() == new.certificate.public_key()
    assert issued_by(cross, old.certificate)
    assert cross.not_valid_after_utc <= min(old.not_after, new.not_after)  # never outlives a CA
    assert (store.path / "roots.crt").read_bytes() == new.cert_pem() + old.cert_pem()
    rotation = load_rotation(store.path)
    assert rotation is not None and rotation.planned_end - rotation.started_at == dt.timedelta(days=90)

    # OpenSSL's own verifier: a leaf of the new CA with the cross certificate verifies against the old
    # root alone, against the new root alone, and against both.
    leaf = new.issue_server(["db.example.test"])
    trust = trust_for(store, new)
    files = {name: tmp_path / f"{name}.pem" for name in ("leaf", "cross", "old", "new", "both")}
    files["leaf"].write_bytes(leaf.cert_pem())
    files["cross"].write_bytes(b"".join(rot._pem(c) for c in trust.chain))
    files["old"].write_bytes(old.cert_pem())
    files["new"].write_bytes(new.cert_pem())
    files["both"].write_bytes(trust.roots_pem())
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    for anchor in ("old", "new", "both"):
        run = subprocess.run(
            [
                openssl,
                "verify",
                "-CAfile",
                str(files[anchor]),
                "-untrusted",
                str(files["cross"]),
                str(files["leaf"]),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 0, (anchor, run.stdout, run.stderr)
    # Without the cross certificate, an old-root client cannot build a path.
    run = subprocess.run(
        [openssl, "verify", "-CAfile", str(files["old"]), str(files["leaf"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0


def test_a_second_rotation_waits_for_retire(store: CAStore) -> None:
    rotate(store.path)
    with pytest.raises(PKIError, match="already in progress"):
        rotate(store.path)


def test_an_interrupted_rotation_is_finished_by_a_rerun(
    store: CAStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.load().certificate
    real_move = rot._move_ca_files
    calls = {"n": 0}

    def dies_on_second_move(source: Path, target: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after the old CA moved out, before the new one moved in
        real_move(source, target)

    monkeypatch.setattr(rot, "_move_ca_files", dies_on_second_move)
    with pytest.raises(KeyboardInterrupt):
        rotate(store.path)
    with pytest.raises(PKIError, match="interrupted"):
        load_rotation(store.path)
    monkeypatch.setattr(rot, "_move_ca_files", real_move)
    result = rotate(store.path)
    assert result.resumed and result.previous == old
    assert store.load().certificate.subject.rfc4514_string() == "CN=pgbatten CA G2"
    assert [e.name for e in CAStore(store.path / "rotation" / "previous").entries()] == [
        "alice",
        "db.example.test",
    ]


def test_retire_refuses_while_old_client_certificates_remain(store: CAStore) -> None:
    rotate(store.path)
    with pytest.raises(PKIError, match=r"alice .*still valid|still valid.*alice"):
        retire(store.path)
    rotation = load_rotation(store.path)
    assert rotation is not None
    # alice gets a certificate from the new CA: --revoke-replaced then revokes the old one and retires.
    new = store.load()
    store.record(new.issue_client("alice"), "client", "alice")
    assert [e.name for e in replaced_old_certificates(rotation, NOW)] == ["alice"]
    result = retire(store.path, revoke_replaced=True)
    assert result.forced == ()
    assert load_rotation(store.path) is None
    assert (result.archive / "ca.crt").exists() and (result.archive / "cross.crt").exists()
    assert (store.path / "roots.crt").read_bytes() == new.cert_pem()
    # The retired CA's leaves are due wherever they remain.
    trust = trust_for(store, new)
    assert trust.previous is None and len(trust.retired) == 1
    leaf = CertificateAuthority(
        certificate=x509.load_pem_x509_certificate((result.archive / "ca.crt").read_bytes()),
        key=CAStore(result.archive).load().key,
    ).issue_server(["db.example.test"])
    assert trust.issued_by_previous(leaf.certificate)


def test_retire_force_and_without_rotation(store: CAStore) -> None:
    with pytest.raises(PKIError, match="no CA rotation"):
        retire(store.path)
    rotate(store.path)
    result = retire(store.path, force=True)
    assert [e.name for e in result.forced] == ["alice"]
