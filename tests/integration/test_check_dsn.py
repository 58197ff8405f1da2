"""``pgbatten check --dsn``: the server-side audit joins the outside one, from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from pgbatten.cli import main
from pgbatten.cluster.temp import TempCluster

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
