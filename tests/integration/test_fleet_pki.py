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
from pgbatten.fleet.request import PENDING_KEY_NAME
from pgbatten.pki import CAStore
from pgbatten.secure.hosts import certificate_hosts, gather_machine_names

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
