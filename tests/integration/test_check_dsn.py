"""``pgbatten check --dsn``: the server-side audit joins the outside one, from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgbatten.cli import main
from pgbatten.cluster.temp import TempCluster
from tests.integration.test_check_audit import Pki
from tests.integration.test_check_audit import cert_dir as cert_dir  # fixture
from tests.integration.test_check_audit import tls_cluster as tls_cluster  # fixture

pytestmark = pytest.mark.integration

HBA = """\
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
"""


def test_dsn_adds_server_findings(make_cluster: Callable[..., TempCluster]) -> None:
    cluster = make_cluster(hba=HBA, settings={"listen_addresses": "'127.0.0.1'"})
    cluster.sql().query("CREATE ROLE auditor LOGIN SUPERUSER PASSWORD 'audit-pw'")
    cluster.sql().query("SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'old-pw'")
    dsn = f"host=127.0.0.1 port={cluster.port} dbname=postgres user=auditor password=audit-pw sslmode=disable"
    result = CliRunner().invoke(
        main, ["check", f"127.0.0.1:{cluster.port}", "--quick", "--json", "--dsn", dsn]
    )
    assert result.exit_code == 1, result.output
    [target] = json.loads(result.output[result.output.index("[") :])
    ids = {f["id"] for f in target["findings"]}
    # Outside and inside agree on the problem, and the inside names what the outside cannot see.
    assert "plaintext-accepted" in ids
    assert {"server-ssl-off", "server-hba-plaintext-accepted", "server-md5-passwords"} <= ids
    assert target["grade"] == "F"


def test_dsn_with_several_targets_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["check", "127.0.0.1:1", "127.0.0.1:2", "--dsn", "host=127.0.0.1"])
    assert result.exit_code == 2
    assert "exactly one target" in result.output


def test_dsn_that_cannot_connect_is_not_a_clean_audit(
    tls_cluster: Callable[..., tuple[TempCluster, Pki]],
) -> None:
    # A target the outside check grades A+: only the failed inside audit can make the exit status non-zero.
    cluster, pki = tls_cluster(
        settings={"ssl_ciphers": "'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384'"},
    )
    ca_file = Path(pki.files["ssl_cert_file"].strip("'")).parent / "root.crt"
    target = f"127.0.0.1:{cluster.port}"
    clean = CliRunner().invoke(main, ["check", target, "--json", "--ca", str(ca_file)])
    assert clean.exit_code == 0, clean.output
    dsn = f"host=127.0.0.1 port={cluster.port} dbname=postgres user=nosuchrole password=x sslmode=require"
    result = CliRunner().invoke(main, ["check", target, "--json", "--ca", str(ca_file), "--dsn", dsn])
    assert result.exit_code == 1, result.output
    [doc] = json.loads(result.output[result.output.index("[") :])
    failed = [f for f in doc["findings"] if f["id"] == "server-audit-failed"]
    assert failed and failed[0]["severity"] == "high" and "cannot connect" in failed[0]["detail"]
    assert doc["grade"] == "B"
