"""`pgbatten mitm` against real clients (psycopg's libpq and the system's psql) and a real TLS-only server:
each verdict checked against what the client itself got (rows through the attacker, or an error)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgbatten import libpq
from pgbatten.attack.forge import Attack
from pgbatten.attack.matrix import CERT_ROLE, TlsServer, tls_server
from pgbatten.attack.mitm import Mitm
from pgbatten.attack.mitm_connection import MitmConnection, MitmOptions, Verdict
from pgbatten.cli import main
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate
from pgbatten.probe.wire import Target
from tests.integration.attack_helpers import PASSWORD, psql, run_tool

pytestmark = pytest.mark.integration

QUERY = "SELECT 'card 4111 1111 1111 1111'"


@pytest.fixture(scope="module")
def server(
    pg_binaries: PgBinaries, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> Iterator[TlsServer]:
    with tls_server(password=PASSWORD, binaries=pg_binaries, template=cluster_templates(pg_binaries)) as env:
        yield env


def _params(server: TlsServer, port: int, sslmode: libpq.SslMode, **extra: str) -> dict[str, str]:
    return libpq.params(
        host="localhost",
        hostaddr="127.0.0.1",
        port=port,
        user=extra.pop("user", "app"),
        password=PASSWORD,
        sslmode=sslmode,
        sslrootcert=server.ca_file if sslmode.startswith("verify") else None,
        extra=extra,
    )


def _psycopg(params: dict[str, str]) -> tuple[list[tuple[Any, ...]] | None, str]:
    try:
        with psycopg.connect(libpq.conninfo(params), autocommit=True) as conn:
            return conn.execute(QUERY).fetchall(), ""
    except psycopg.Error as exc:
        return None, str(exc)


def _attack(
    server: TlsServer, attack: Attack, sslmode: libpq.SslMode, *, client: str = "psycopg", **extra: str
) -> tuple[MitmConnection, list[tuple[Any, ...]] | None, str]:
    options = MitmOptions(
        listen=Target("127.0.0.1", 0), upstream=Target("127.0.0.1", server.port), attack=attack, ca=server.ca
    )
    with Mitm(options) as mitm:
        params = _params(server, mitm.port, sslmode, **extra)
        if client == "psql":
            result = psql(params, "-c", QUERY)
            rows = [(result.stdout.strip(),)] if result.returncode == 0 else None
            error = result.stderr
        else:
            rows, error = _psycopg(params)
        assert mitm.wait_connections(30)
        conns = list(mitm.connections)
    assert conns, "the client never reached the man in the middle"
    return conns[-1], rows, error


def test_strip_reads_prefer_and_require_refuses(server: TlsServer) -> None:
    conn, rows, _ = _attack(server, Attack.STRIP, "prefer", client="psql")
    assert rows == [("card 4111 1111 1111 1111",)]
    assert conn.verdict == Verdict.READ and conn.stripped
    assert conn.queries == [QUERY] and conn.rows == 1
    assert conn.upstream_tls is not None  # the attacker spoke TLS to the real server all along
    conn, rows, error = _attack(server, Attack.STRIP, "require", client="psql")
    assert rows is None and "SSL" in error
    assert conn.verdict == Verdict.REFUSED and not conn.startup


def test_self_signed_fools_require_but_channel_binding_stops_the_relay(server: TlsServer) -> None:
    conn, rows, error = _attack(server, Attack.SELF_SIGNED, "require")
    # libpq's default channel_binding=prefer binds SCRAM to the forged certificate: the server refuses.
    assert rows is None and "channel binding" in error
    assert conn.verdict == Verdict.FOOLED and conn.client_tls is not None
    assert conn.startup["user"] == "app"
    assert "SCRAM client proof (offline guessing)" in conn.credentials
    assert conn.upstream_login is not None and "channel binding" in conn.upstream_login
    conn, rows, _ = _attack(server, Attack.SELF_SIGNED, "require", channel_binding="disable")
    assert rows == [("card 4111 1111 1111 1111",)]
    assert conn.verdict == Verdict.READ and conn.queries == [QUERY]
    conn, rows, error = _attack(server, Attack.SELF_SIGNED, "verify-full")
    assert rows is None and "certificate verify failed" in error
    assert conn.verdict == Verdict.REFUSED and conn.refusal is not None and "alert" in conn.refusal


def test_same_ca_wrong_host_fools_verify_ca_not_verify_full(server: TlsServer) -> None:
    conn, rows, _ = _attack(server, Attack.SAME_CA_WRONG_HOST, "verify-ca", channel_binding="disable")
    assert rows is not None and conn.verdict == Verdict.READ
    conn, rows, error = _attack(server, Attack.SAME_CA_WRONG_HOST, "verify-full")
    assert rows is None and "does not match host name" in error
    # libpq checks the name after the handshake: it then closes without a word.
    assert conn.verdict == Verdict.REFUSED and conn.client_tls is not None and not conn.startup


def test_expired_and_other_ca_fail_verify_ca(server: TlsServer) -> None:
    conn, rows, error = _attack(server, Attack.EXPIRED, "verify-ca")
    assert rows is None and "certificate verify failed" in error
    assert conn.verdict == Verdict.REFUSED, conn.refusal
    assert conn.refusal == "the client aborted the handshake with alert certificate_expired"
    conn, rows, _ = _attack(server, Attack.OTHER_CA, "verify-ca")
    assert rows is None and conn.verdict == Verdict.REFUSED


def test_downgrade_auth_takes_the_password_unless_the_client_requires_scram(server: TlsServer) -> None:
    conn, rows, _ = _attack(server, Attack.DOWNGRADE_AUTH, "require", client="psql")
    assert rows == [("card 4111 1111 1111 1111",)]
    assert conn.verdict == Verdict.READ and conn.password == PASSWORD
    for setting in ({"require_auth": "scram-sha-256"}, {"channel_binding": "require"}):
        conn, rows, error = _attack(server, Attack.DOWNGRADE_AUTH, "require", **setting)
        assert rows is None and conn.password is None, setting
        assert conn.verdict == Verdict.REFUSED, setting
        assert "cleartext" in conn.refusal if conn.refusal else False, (setting, error)


def test_client_certificate_cannot_be_relayed(server: TlsServer) -> None:
    files = server.client_files
    cert = {"sslcert": str(files.cert), "sslkey": str(files.key), "sslcertmode": "allow"}
    direct, _ = _psycopg(_params(server, server.port, "verify-full", user=CERT_ROLE, **cert))
    assert direct is not None  # the certificate works without an attacker
    conn, rows, error = _attack(
        server, Attack.DOWNGRADE_AUTH, "require", user=CERT_ROLE, channel_binding="disable", **cert
    )
    assert rows is None and "certificate" in error
    assert conn.password == PASSWORD  # he has the password, and it is not enough
    assert conn.verdict == Verdict.FOOLED and conn.upstream_login is not None
    assert "certificate" in conn.upstream_login


def test_cli_json_and_sigterm(server: TlsServer) -> None:
    with run_tool("mitm", "--upstream", f"127.0.0.1:{server.port}", "--attack", "self-signed") as mitm:
        params = _params(server, mitm.port, "require", channel_binding="disable")
        rows, _ = _psycopg(params)
        assert rows == [("card 4111 1111 1111 1111",)]
        closed = mitm.wait_for("closed")
        lines = mitm.stop()
    assert mitm.proc.returncode == 0
    assert closed["verdict"] == "read" and closed["user"] == "app" and closed["queries"] == [QUERY]
    assert any(line["type"] == "message" and line["kind"] == "DataRow" for line in lines)
    (summary,) = [line for line in lines if line["type"] == "summary"]
    assert [c["verdict"] for c in summary["connections"]] == ["read"]


def test_cli_errors(server: TlsServer, tmp_path: Path) -> None:
    runner = CliRunner()
    upstream = f"127.0.0.1:{server.port}"
    result = runner.invoke(main, ["mitm", "--upstream", upstream, "--attack", "same-ca-wrong-host"])
    assert result.exit_code == 2
    assert "pgbatten: error: --attack same-ca-wrong-host needs the CA the client trusts" in result.output
    result = runner.invoke(main, ["mitm", "--attack", "strip"])
    assert result.exit_code == 2 and "pgbatten: error: give --upstream" in result.output
    (tmp_path / "ca.crt").write_bytes(server.ca.cert_pem())
    args = ["mitm", "--upstream", upstream, "--attack", "expired", "--ca-cert", str(tmp_path / "ca.crt")]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "--ca-cert and --ca-key go together" in result.output


def test_direct_tls_client_through_the_man_in_the_middle(server: TlsServer) -> None:
    # libpq 17+ can skip SSLRequest (sslnegotiation=direct, ALPN postgresql): the man in the middle answers
    # the ClientHello himself and still reaches a server too old for direct TLS by SSLRequest.
    if not libpq.libpq_knows("sslnegotiation"):
        pytest.skip("this libpq has no sslnegotiation")
    conn, rows, _ = _attack(
        server, Attack.SELF_SIGNED, "require", sslnegotiation="direct", channel_binding="disable"
    )
    assert rows == [("card 4111 1111 1111 1111",)]
    assert conn.asked == "direct TLS" and conn.verdict == Verdict.READ
    conn, rows, _ = _attack(server, Attack.STRIP, "require", sslnegotiation="direct")
    assert rows is None and conn.verdict == Verdict.REFUSED
    assert conn.refusal == "the client started TLS directly: there is no SSLRequest to strip"
