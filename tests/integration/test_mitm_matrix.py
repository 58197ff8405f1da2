"""The attack matrix on real drivers (psql, psycopg, PgJDBC, node-postgres), reduced for CI: every verdict
agrees with what the client itself reported, and the verdicts are the ones each driver's settings earn."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from pgbatten.attack.drivers import Setting, Variant
from pgbatten.attack.forge import Attack
from pgbatten.attack.matrix import NO_ATTACK, MatrixResult, run_matrix, tls_server
from pgbatten.cli import main
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate
from tests.conftest import PGJDBC_JAR

pytestmark = pytest.mark.integration

SETTINGS = [
    Setting("prefer"),
    Setting("require"),
    Setting("verify-ca"),
    Setting("verify-full"),
    Setting("require", Variant.CHANNEL_BINDING),
    Setting("require", Variant.REQUIRE_AUTH),
    Setting("require", Variant.CLIENT_CERT),
]
ATTACKS = (Attack.STRIP, Attack.SELF_SIGNED, Attack.SAME_CA_WRONG_HOST, Attack.DOWNGRADE_AUTH)
DRIVERS = ("psql", "psycopg", "jdbc", "node")


@pytest.fixture(scope="module")
def result(
    pg_binaries: PgBinaries, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> Iterator[MatrixResult]:
    with pytest.MonkeyPatch.context() as mp:
        if PGJDBC_JAR is not None:  # the tests' HOME is an empty one
            mp.setenv("PGBATTEN_PGJDBC_JAR", str(PGJDBC_JAR))
        with tls_server(binaries=pg_binaries, template=cluster_templates(pg_binaries)) as server:
            yield run_matrix(DRIVERS, settings=SETTINGS, attacks=ATTACKS, server=server)


def verdict(result: MatrixResult, driver: str, setting: Setting, attack: str) -> str:
    cell = result.cell(driver, setting, attack)
    assert cell is not None, (driver, setting, attack)
    return cell.verdict


def verdicts(result: MatrixResult, driver: str) -> Callable[[Setting, str], str]:
    def of(setting: Setting, attack: str) -> str:
        return verdict(result, driver, setting, str(attack))

    return of


def test_every_verdict_agrees_with_the_client(result: MatrixResult) -> None:
    # scripts/test installs every driver; a machine without one must say so rather than pass quietly.
    assert [d.unavailable for d in result.drivers if d.unavailable] == []
    assert result.cells
    assert result.inconsistent() == []


@pytest.mark.parametrize("driver", ["psql", "psycopg", "jdbc"])
def test_libpq_semantics(result: MatrixResult, driver: str) -> None:
    v = verdicts(result, driver)
    for setting in SETTINGS[:4]:
        assert v(setting, NO_ATTACK) == "connects"
    assert v(Setting("prefer"), Attack.STRIP) == "read"
    assert v(Setting("require"), Attack.STRIP) == "refused"
    # require accepts the forged certificate; SCRAM's channel binding (prefer by default) then stops the
    # relay, but the client has sent its user and a SCRAM proof.
    assert v(Setting("require"), Attack.SELF_SIGNED) == "fooled"
    assert v(Setting("require"), Attack.DOWNGRADE_AUTH) == "read"
    assert v(Setting("verify-ca"), Attack.SELF_SIGNED) == "refused"
    assert v(Setting("verify-ca"), Attack.SAME_CA_WRONG_HOST) == "fooled"
    assert v(Setting("verify-ca"), Attack.DOWNGRADE_AUTH) == "read"
    for attack in ATTACKS:
        assert v(Setting("verify-full"), attack) == "refused"
    assert v(Setting("require", Variant.CHANNEL_BINDING), Attack.DOWNGRADE_AUTH) == "refused"
    # A client certificate cannot be presented by the man in the middle: he never gets in.
    assert v(Setting("require", Variant.CLIENT_CERT), Attack.DOWNGRADE_AUTH) == "fooled"
    assert result.departures(driver) == []


def test_psql_15_has_no_require_auth_and_psycopg_refuses_the_downgrade(result: MatrixResult) -> None:
    setting = Setting("require", Variant.REQUIRE_AUTH)
    assert verdict(result, "psycopg", setting, str(Attack.DOWNGRADE_AUTH)) == "refused"
    assert verdict(result, "jdbc", setting, str(Attack.DOWNGRADE_AUTH)) == "refused"
    psql = result.cell("psql", setting, str(Attack.DOWNGRADE_AUTH))
    assert psql is not None
    if psql.verdict == "n/a":  # psql of PostgreSQL 15 links a libpq without require_auth
        assert "require_auth" in psql.detail


def test_node_postgres_treats_require_as_verify_full(result: MatrixResult) -> None:
    v = verdicts(result, "node")
    assert v(Setting("require"), NO_ATTACK) == "fails"
    assert v(Setting("require"), Attack.SELF_SIGNED) == "refused"
    assert v(Setting("prefer"), Attack.STRIP) == "refused"
    assert v(Setting("verify-ca"), Attack.SAME_CA_WRONG_HOST) == "refused"
    assert v(Setting("verify-full"), NO_ATTACK) == "connects"
    assert v(Setting("require", Variant.REQUIRE_AUTH), Attack.DOWNGRADE_AUTH) == "n/a"
    departures = result.departures("node")
    assert any(d.startswith("sslmode=require does not connect with no attacker") for d in departures), (
        departures
    )
    assert any(
        d.startswith("sslmode=verify-ca refuses same-ca-wrong-host, downgrade-auth, which libpq")
        for d in departures
    ), departures


def test_cli_matrix_json_for_one_driver() -> None:
    result = CliRunner().invoke(main, ["mitm", "--matrix", "--clients", "psycopg", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    cells = data["cells"]
    assert len(cells) == 6 * 4 * 7
    assert all(c["consistent"] for c in cells)
    assert {c["verdict"] for c in cells} >= {"read", "fooled", "refused", "connects"}
    assert data["drivers"][0]["departures"] == []
