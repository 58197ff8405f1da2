"""`pgbatten wiretap` as a process between real clients (psql, psycopg) and real servers: what it shows in
plaintext, what still leaks under TLS 1.2 (SNI, the certificate, sizes) and a CancelRequest in the clear."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgbatten import libpq
from pgbatten.attack.drivers import DRIVERS, Endpoint, Setting
from pgbatten.attack.matrix import tls_server
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from tests.conftest import PGJDBC_JAR
from tests.integration.attack_helpers import PASSWORD, psql, psql_command, run_tool

pytestmark = pytest.mark.integration

MD5_HBA = """\
local all all               peer
host  all all 127.0.0.1/32  md5
"""


@pytest.fixture
def templated(
    pg_binaries: PgBinaries, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> dict[str, Any]:
    """The session's installation and initdb template, for :func:`tls_server`."""
    return {"binaries": pg_binaries, "template": cluster_templates(pg_binaries)}


def _messages(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("type") == "message" and line["kind"] == kind]


def test_plaintext_login_query_and_rows(make_cluster: Callable[..., TempCluster]) -> None:
    cluster = make_cluster(hba=MD5_HBA, settings={"password_encryption": "md5"})
    cluster.sql().query("CREATE ROLE app LOGIN PASSWORD :'pw'", {"pw": PASSWORD})
    with run_tool("wiretap", "--upstream", f"127.0.0.1:{cluster.port}") as tap:
        params = libpq.params(
            host="127.0.0.1", port=tap.port, user="app", password=PASSWORD, sslmode="prefer"
        )
        result = psql(params, "-c", "SELECT 'card 4111-1111', 42")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "card 4111-1111|42"  # relayed unchanged
        closed = tap.wait_for("closed")
        lines = tap.stop()
    startup = _messages(lines, "StartupMessage")[0]["fields"]
    assert (startup["user"], startup["database"]) == ("app", "postgres")
    salt = _messages(lines, "AuthenticationMD5Password")[0]["fields"]["salt"]
    password = _messages(lines, "PasswordMessage")[0]["fields"]
    assert password["method"] == "md5" and password["hash"].startswith("md5")
    assert _messages(lines, "Query")[0]["fields"]["query"] == "SELECT 'card 4111-1111', 42"
    assert _messages(lines, "DataRow")[0]["fields"]["value"] == ["card 4111-1111", "42"]
    assert closed["transport"] == "plaintext" and closed["negotiation"] == "SSLRequest"
    leaks = {leak["what"]: leak["detail"] for leak in closed["leaks"]}
    assert salt in leaks["md5 hash"]
    assert "card 4111-1111" in leaks["rows"]
    assert leaks["user"] == "app"
    summary = next(line for line in lines if line["type"] == "summary")
    assert [c["transport"] for c in summary["connections"]] == ["plaintext"]


def test_tls12_leaks_and_a_cancel_request_in_the_clear(templated: dict[str, Any]) -> None:
    with (
        tls_server(password=PASSWORD, settings={"ssl_max_protocol_version": "'TLSv1.2'"}, **templated) as env,
        run_tool("wiretap", "--upstream", f"127.0.0.1:{env.port}") as tap,
    ):
        params = libpq.params(
            host="localhost",
            hostaddr="127.0.0.1",
            port=tap.port,
            user="app",
            password=PASSWORD,
            sslmode="verify-full",
            sslrootcert=env.ca_file,
        )
        # psql (libpq 15) cancels a query on Ctrl-C with a CancelRequest that is never encrypted.
        sleeper = subprocess.Popen(
            psql_command(params, "-c", "SELECT pg_sleep(60)"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        tap.wait_for("message", kind="TLSRecord", direction="client", timeout=30)
        time.sleep(1.5)  # logged in and the query is running
        sleeper.send_signal(signal.SIGINT)
        _, err = sleeper.communicate(timeout=30)
        assert "canceling statement due to user request" in err
        cancel = tap.wait_for("message", kind="CancelRequest")
        lines = tap.stop()
    assert int(cancel["fields"]["pid"]) > 0 and len(cancel["fields"]["key"]) == 8
    summaries = next(line for line in lines if line["type"] == "summary")["connections"]
    by_transport = {c["transport"]: c for c in summaries}
    assert set(by_transport) == {"TLS", "cancel request"}
    tls = by_transport["TLS"]
    assert tls["tls_version"] == "TLS 1.2"
    leaks = {leak["what"]: leak["detail"] for leak in tls["leaks"]}
    assert leaks["server name (SNI)"] == "localhost"
    assert leaks["server certificate"].startswith("CN=localhost, SANs DNS:localhost, IP:127.0.0.1")
    assert "record sizes" in leaks
    assert not {"user", "SQL", "rows", "md5 hash", "SCRAM exchange"} & set(leaks)
    assert all("pg_sleep" not in str(line) for line in lines)


def test_tls13_hides_the_certificate_and_max_bytes_stops(templated: dict[str, Any]) -> None:
    with (
        tls_server(password=PASSWORD, **templated) as env,
        run_tool("wiretap", "--upstream", f"127.0.0.1:{env.port}", "--max-bytes", "20000") as tap,
    ):
        params = libpq.params(
            host="localhost",
            hostaddr="127.0.0.1",
            port=tap.port,
            user="app",
            password=PASSWORD,
            sslrootcert=env.ca_file,
        )
        with psycopg.connect(libpq.conninfo(params), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
            # Traffic until the limit is passed: the wiretap stops and closes the connection by itself.
            deadline = time.monotonic() + 30
            with pytest.raises(psycopg.OperationalError):
                while time.monotonic() < deadline:
                    conn.execute("SELECT repeat('x', 100)").fetchall()
        tap.proc.wait(timeout=30)
        assert tap.proc.returncode == 0
        lines = tap.stop()
    (summary,) = [line for line in lines if line["type"] == "summary"]
    (tls,) = summary["connections"]
    assert tls["transport"] == "TLS" and tls["tls_version"] == "TLS 1.3" and tls["cut_short"]
    assert "server certificate" not in {leak["what"] for leak in tls["leaks"]}


@pytest.mark.parametrize("key", ["jdbc", "node"])
def test_pgjdbc_and_node_postgres_through_the_wiretap(
    key: str, templated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if PGJDBC_JAR is not None:
        monkeypatch.setenv("PGBATTEN_PGJDBC_JAR", str(PGJDBC_JAR))
    driver = DRIVERS[key](tmp_path)
    assert driver.unavailable() is None, driver.unavailable()
    with (
        tls_server(password=PASSWORD, **templated) as env,
        run_tool("wiretap", "--upstream", f"127.0.0.1:{env.port}") as tap,
    ):
        driver.start()
        try:
            endpoint = Endpoint(port=tap.port, user="app", password=PASSWORD, ca_file=env.ca_file)
            outcome = driver.run(endpoint, Setting("verify-full"), "SELECT 'card 4111'")
        finally:
            driver.stop()
        assert outcome.value == "card 4111", outcome.error  # relayed unchanged
        closed = tap.wait_for("closed")
        lines = tap.stop()
    assert closed["transport"] == "TLS" and closed["negotiation"] == "SSLRequest"
    leaks = {leak["what"] for leak in closed["leaks"]}
    assert {"encryption request", "TLS version", "record sizes"} <= leaks
    assert not {"user", "SQL", "rows"} & leaks
    assert all("card 4111" not in str(line) for line in lines)
