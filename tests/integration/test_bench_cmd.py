"""`pgbatten bench` against real clusters: every way of connecting measured, round trips as the protocol
says, refusals reported, nothing written. The figures are checked for being produced and sane, never for
being fast."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pgbatten import libpq
from pgbatten.bench.server import BenchOptions, Mode, run_bench
from pgbatten.cli import main
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from tests.conftest import newest_with
from tests.integration.bench_helpers import PASSWORD, ROLE, TLS_ONLY_HBA, tls_cluster

pytestmark = pytest.mark.integration

QUICK = ["--connections", "2", "--seconds", "0.3"]


def dsn(cluster: TempCluster, workdir: Path, **extra: str) -> str:
    return libpq.conninfo(
        {
            "host": "localhost",
            "hostaddr": "127.0.0.1",
            "port": str(cluster.port),
            "user": ROLE,
            "password": PASSWORD,
            "dbname": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": str(workdir / "ca.crt"),
            **extra,
        }
    )


def bench_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


@pytest.fixture(scope="module")
def open_server(
    tmp_path_factory: pytest.TempPathFactory,
    pg_binaries: PgBinaries,
    cluster_templates: Callable[[PgBinaries], ClusterTemplate],
) -> Iterator[tuple[TempCluster, Path]]:
    """TLS on, plaintext still allowed. The bench role's sessions are read-only, so every phase passing
    shows that the bench needs no write."""
    workdir = tmp_path_factory.mktemp("bench-open")
    with tls_cluster(pg_binaries, workdir, cluster_templates(pg_binaries)) as cluster:
        cluster.sql().query(f"ALTER ROLE {ROLE} SET default_transaction_read_only = on")
        yield cluster, workdir


def test_every_way_measured_with_the_protocols_round_trips(open_server: tuple[TempCluster, Path]) -> None:
    cluster, workdir = open_server
    doc = bench_json("--dsn", dsn(cluster, workdir), *QUICK)
    modes = {m["mode"]: m for m in doc["modes"]}
    assert list(modes) == ["plaintext", "tls1.2", "tls1.3", "direct"]
    assert doc["target"] == f"localhost:{cluster.port}"
    assert doc["server_version"] // 10000 == cluster.bin.major

    for name in ("plaintext", "tls1.2", "tls1.3"):
        m = modes[name]
        assert m["allowed"], m
        assert m["reason"] is None, m["reason"]
        assert 1 <= m["connect"]["runs"] <= 2
        assert 0 < m["connect"]["median_seconds"] <= m["connect"]["max_seconds"]
        assert m["connections_per_second"] > 0
        assert m["queries_per_second"] > 0
        assert m["bulk_bytes"] > 0 and m["bulk_seconds"] > 0
    assert modes["plaintext"]["protocol"] is None
    assert modes["tls1.2"]["protocol"] == "TLSv1.2"
    assert modes["tls1.3"]["protocol"] == "TLSv1.3"
    # TCP handshake, startup, two SCRAM steps, the query; TLS adds SSLRequest and its handshake (two round
    # trips under TLS 1.2, one under TLS 1.3 plus a HelloRetryRequest for psycopg's X25519 key share).
    assert modes["plaintext"]["round_trips"]["count"] == 5, modes["plaintext"]["round_trips"]
    assert modes["tls1.2"]["round_trips"]["count"] == 8, modes["tls1.2"]["round_trips"]
    tls13 = modes["tls1.3"]["round_trips"]
    if cluster.bin.major <= 17:
        p256 = modes["tls1.3"]["round_trips_p256_first"]
        assert tls13["hello_retry"] and tls13["count"] == 8, tls13
        assert p256["count"] == 7 and not p256["hello_retry"], p256
    if cluster.bin.major < 17:
        assert not modes["direct"]["allowed"]
        assert "needs 17" in modes["direct"]["reason"]


def test_text_output_names_the_tax(open_server: tuple[TempCluster, Path]) -> None:
    cluster, workdir = open_server
    result = CliRunner().invoke(
        main, ["bench", "--dsn", dsn(cluster, workdir), *QUICK], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "TLS 1.3: +3 round trips per new connection beyond plaintext" in result.output or (
        cluster.bin.major >= 18
    )
    assert "plaintext" in result.output and "bulk MiB/s" in result.output


def test_tls_only_server_refuses_plaintext_and_direct_ssl_on_17(
    tmp_path: Path, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> None:
    binaries = newest_with(17)
    with tls_cluster(binaries, tmp_path, cluster_templates(binaries), hba=TLS_ONLY_HBA) as cluster:
        base = libpq.user_params(dsn(cluster, tmp_path))
        report = run_bench(
            base, BenchOptions(connections=1, seconds=0.2, modes=(Mode.PLAINTEXT, Mode.DIRECT))
        )
    plain, direct = report.modes
    assert not plain.allowed
    assert plain.reason is not None and "no encryption" in plain.reason
    assert direct.allowed and direct.protocol == "TLSv1.3"
    assert direct.round_trips is not None
    # No SSLRequest: TCP, ClientHello (+ HelloRetryRequest for X25519), then four encrypted round trips.
    assert direct.round_trips.steps[1].startswith("TLS ClientHello")
    assert direct.round_trips.count == (7 if direct.round_trips.hello_retry else 6)
    if direct.round_trips.hello_retry:
        assert direct.round_trips_p256 is not None and direct.round_trips_p256.count == 6


def test_bad_input_is_one_line_and_exit_2(open_server: tuple[TempCluster, Path], tmp_path: Path) -> None:
    cluster, _ = open_server
    runner = CliRunner()
    bad = runner.invoke(main, ["bench", "--dsn", "host=localhost port=notaport"])
    assert bad.exit_code == 2
    assert bad.output.startswith("pgbatten: error:")
    several = runner.invoke(main, ["bench", "--dsn", "host=a,b"])
    assert several.exit_code == 2 and "one server" in several.output
    socket_dsn = libpq.conninfo({"host": str(cluster.socket_dir), "port": str(cluster.port)})
    over_socket = runner.invoke(main, ["bench", "--dsn", socket_dsn, *QUICK])
    assert over_socket.exit_code == 2 and "Unix socket" in over_socket.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = runner.invoke(main, ["bench", "--dsn", f"host=127.0.0.1 port={closed} connect_timeout=2", *QUICK])
    assert down.exit_code == 2
    assert (
        "cannot connect in any way" in down.output
        and down.output[-1] == "\n"
        and down.output.count("\n") == 1
    )


def test_secure_bench_prints_before_after_and_the_tax(seed_cluster: TempCluster, ca_dir: Path) -> None:
    """The seed: plaintext open, TLS off before; after secure, TLS only, plaintext refused."""
    args = ["secure", "--pgdata", str(seed_cluster.data_dir), "--yes", "--bench"]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    before, _, after = out.partition("bench after:")
    assert "bench before:" in before
    assert "TLS 1.3: not allowed" in before  # ssl = off before
    assert "plaintext: +" not in before
    report_after, _, tax = after.partition("the TLS tax: after against plaintext before")
    assert "plaintext: not allowed" in report_after and "no encryption" in report_after
    assert "before: plaintext" in tax and "after: plaintext" in tax and "refused" in tax
    # Seed on 15: TLS 1.3 costs 3 round trips more than plaintext did, 2 with the P-256 key share first.
    if seed_cluster.bin.major <= 17:
        assert "8 (+3), P-256 first 7 (+2)" in tax
    # The throwaway bench role is gone again.
    left = seed_cluster.sql().query("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgbatten_verify_%'")
    assert left == [("0",)]


def test_a_machine_too_busy_for_the_time_given_still_measures(open_server: tuple[TempCluster, Path]) -> None:
    # A time budget shorter than the first query or the first chunk of the bulk transfer takes: what a
    # starved machine (a loaded CI runner) sees with --seconds 0.3. It used to measure 0 queries per second
    # and 0 bytes (the server cancelled the COPY before it sent anything); it measures one of each now.
    from psycopg.conninfo import conninfo_to_dict

    from pgbatten.bench import server as bench_server

    cluster, workdir = open_server
    params = {k: str(v) for k, v in conninfo_to_dict(dsn(cluster, workdir)).items()}
    assert bench_server._query_rate(params, 0.0) > 0
    received, elapsed, complete = bench_server._bulk(params, 32 * 1024 * 1024, 0.000001)
    assert received > 0 and elapsed > 0 and not complete
