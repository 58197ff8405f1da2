"""The split PKI without Ansible, on real clusters: the server's key made on the server (``pgbatten csr``),
the CSR signed where the CA is (``pgbatten ca sign``)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pgbatten.cli import main
from pgbatten.cluster.temp import TempCluster
from pgbatten.pki import CAStore, CertificateAuthority
from pgbatten.secure.hosts import certificate_hosts, gather_machine_names
from pgbatten.secure.plan import PENDING_KEY_NAME

pytestmark = pytest.mark.integration


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_csr_keeps_the_key_on_the_server_and_names_what_secure_would(
    seed_cluster: TempCluster, tmp_path: Path
) -> None:
    result = cli("csr", "--pgdata", str(seed_cluster.data_dir), "--host", "db1.example.com", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["needed"] and doc["key_created"]
    expected = certificate_hosts(
        seed_cluster.listen_addresses,
        ["db1.example.com"],
        gather_machine_names(seed_cluster.listen_addresses),
    )
    assert doc["hosts"] == list(expected)
    key_path = seed_cluster.config_file.parent / PENDING_KEY_NAME
    assert doc["key_path"] == str(key_path)
    info = key_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == seed_cluster.owner.uid
    csr = x509.load_pem_x509_csr(doc["csr"].encode())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert _spki(csr.public_key()) == _spki(key.public_key())
    # Nothing the server uses has changed.
    assert seed_cluster.sql().value("SELECT current_setting('ssl')") == "off"

    again = cli("csr", "--pgdata", str(seed_cluster.data_dir), "--host", "db1.example.com", "--out",
                str(tmp_path / "db1.csr"))  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "reused" in again.stderr
    second = x509.load_pem_x509_csr((tmp_path / "db1.csr").read_bytes())
    assert _spki(second.public_key()) == _spki(key.public_key())

    refused = cli("csr", "--pgdata", str(seed_cluster.data_dir), "--if-needed")
    assert refused.exit_code == 2 and "--ca-certificate" in refused.stderr


def test_csr_signed_where_the_ca_is(seed_cluster: TempCluster, ca_dir: Path, tmp_path: Path) -> None:
    assert cli("ca", "init", "--ca-dir", str(ca_dir)).exit_code == 0
    made = cli("csr", "--pgdata", str(seed_cluster.data_dir), "--out", str(tmp_path / "s.csr"))
    assert made.exit_code == 0, made.output
    signed = cli("ca", "sign", str(tmp_path / "s.csr"), "--ca-dir", str(ca_dir), "--allow-host", "127.0.0.1",
                 "--out", str(tmp_path / "s.crt"))  # fmt: skip
    # The server also asks for its own names (localhost, this machine's name): not allowed, so refused.
    assert signed.exit_code == 2 and "not allowed" in signed.stderr
    assert CAStore(ca_dir).entries() == []
    signed = cli("ca", "sign", str(tmp_path / "s.csr"), "--ca-dir", str(ca_dir),
                 "--out", str(tmp_path / "s.crt"), "--ca-out", str(tmp_path / "ca.crt"))  # fmt: skip
    assert signed.exit_code == 0, signed.output
    cert = x509.load_pem_x509_certificate((tmp_path / "s.crt").read_bytes())
    key = serialization.load_pem_private_key(
        (seed_cluster.config_file.parent / PENDING_KEY_NAME).read_bytes(), None
    )
    assert _spki(cert.public_key()) == _spki(key.public_key())
    # Judged by the CA, the installed certificate (none yet) cannot stay: --if-needed still asks.
    needed = cli("csr", "--pgdata", str(seed_cluster.data_dir), "--if-needed", "--ca-certificate",
                 str(tmp_path / "ca.crt"), "--json")  # fmt: skip
    assert needed.exit_code == 0 and json.loads(needed.stdout)["reasons"] == [
        "no pgbatten-server.crt is installed"
    ]


def test_installed_through_secure_with_every_proof_and_no_ca_on_the_server(
    seed_cluster: TempCluster, tmp_path: Path, isolated_environment: Path
) -> None:
    control = tmp_path / "control"
    assert cli("ca", "init", "--ca-dir", str(control / "ca")).exit_code == 0
    pgdata = str(seed_cluster.data_dir)
    # Before any certificate: the dry run shows the whole change with a stand-in and writes nothing.
    (control / "roots.crt").write_bytes((control / "ca" / "ca.crt").read_bytes())
    before = seed_cluster.config_file.read_bytes()
    dry = cli("secure", "--pgdata", pgdata, "--ca-certificate", str(control / "roots.crt"), "--dry-run",
              "--json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert any("stand-in" in n for n in json.loads(dry.stdout)["notes"])
    assert seed_cluster.config_file.read_bytes() == before
    without = cli("secure", "--pgdata", pgdata, "--ca-certificate", str(control / "roots.crt"), "--yes")
    assert without.exit_code == 2 and "pgbatten csr" in without.stderr

    assert cli("csr", "--pgdata", pgdata, "--out", str(tmp_path / "s.csr")).exit_code == 0
    signed = cli("ca", "sign", str(tmp_path / "s.csr"), "--ca-dir", str(control / "ca"),
                 "--out", str(tmp_path / "s.crt"), "--ca-out", str(tmp_path / "roots.crt"))  # fmt: skip
    assert signed.exit_code == 0, signed.output
    args = ["secure", "--pgdata", pgdata, "--ca-certificate", str(tmp_path / "roots.crt")]
    applied = cli(*args, "--certificate", str(tmp_path / "s.crt"), "--yes", "--json")
    assert applied.exit_code == 0, applied.output
    doc = json.loads(applied.stdout)
    assert doc["status"] == "applied"
    assert doc["proofs"] and all(p["ok"] for p in doc["proofs"])
    assert any(p["what"].startswith("installed certificate served") for p in doc["proofs"])
    cert = x509.load_pem_x509_certificate((tmp_path / "s.crt").read_bytes())
    assert doc["certificate"]["serial"] == str(cert.serial_number)
    cert_dir = seed_cluster.config_file.parent
    assert not (cert_dir / PENDING_KEY_NAME).exists()  # it is the key in use now
    assert stat.S_IMODE((cert_dir / "pgbatten-server.key").stat().st_mode) == 0o600
    # No CA directory appeared on the server's side (the default one would be under the isolated home).
    assert not (isolated_environment / ".local" / "share" / "pgbatten").exists()

    # Again, with the same certificate, and with none: nothing to write.
    for extra in (["--certificate", str(tmp_path / "s.crt")], []):
        again = cli(*args, *extra, "--yes", "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["status"] == "unchanged"
    # The installed certificate can stay, as csr --if-needed now says.
    needed = cli("csr", "--pgdata", pgdata, "--if-needed", "--ca-certificate", str(tmp_path / "roots.crt"),
                 "--json")  # fmt: skip
    assert json.loads(needed.stdout)["needed"] is False


def test_a_certificate_for_another_key_or_ca_is_refused(seed_cluster: TempCluster, tmp_path: Path) -> None:
    other = CertificateAuthority.create()
    (tmp_path / "other.crt").write_bytes(other.cert_pem())
    stray = other.issue_server(["127.0.0.1", "localhost"])
    (tmp_path / "stray.crt").write_bytes(stray.cert_pem())
    before = seed_cluster.config_file.read_bytes()
    refused = cli("secure", "--pgdata", str(seed_cluster.data_dir),
                  "--ca-certificate", str(tmp_path / "other.crt"),
                  "--certificate", str(tmp_path / "stray.crt"), "--yes")  # fmt: skip
    assert refused.exit_code == 2 and "not for a key on this server" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert seed_cluster.config_file.read_bytes() == before
