"""The counting relay on real clusters with real psql: round trips equal the protocol's steps on loopback.

Counts, never times: plaintext + SCRAM + ``SELECT 1`` is 5 round trips (TCP handshake, startup, two SASL
steps, the query); TLS 1.3 after an SSLRequest adds 2 (SSLRequest, ClientHello), a HelloRetryRequest 1 more,
TLS 1.2 one more than TLS 1.3; direct SSL (PostgreSQL 17) drops the SSLRequest.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgbatten import libpq
from pgbatten.bench.clients import BenchError, Psql, client_environment, measure_psql, psql_first_row
from pgbatten.bench.flights import TCP_HANDSHAKE
from pgbatten.bench.relay import DelayRelay
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from pgbatten.errors import UsageError
from pgbatten.keyshare import client_openssl_conf
from tests.conftest import newest_with
from tests.integration.bench_helpers import PASSWORD, ROLE, tls_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench")
    (path / "p256.cnf").write_text(client_openssl_conf())
    return path


@pytest.fixture(scope="module")
def server(
    workdir: Path, pg_binaries: PgBinaries, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> Iterator[tuple[TempCluster, Psql]]:
    with tls_cluster(pg_binaries, workdir, cluster_templates(pg_binaries)) as cluster:
        yield cluster, Psql.at(pg_binaries.path("psql"))


def _params(port: int, sslmode: libpq.SslMode, workdir: Path, **extra: str) -> dict[str, str]:
    return libpq.params(
        host="localhost",
        hostaddr="127.0.0.1",
        port=port,
        user=ROLE,
        password=PASSWORD,
        sslmode=sslmode,
        sslrootcert=workdir / "ca.crt",
        connect_timeout=30,
        extra=extra,
        environ={},
    )


def _first_row(
    psql: Psql, cluster: TempCluster, workdir: Path, sslmode: libpq.SslMode, *, p256: bool, **extra: str
) -> tuple[int, tuple[str, ...], bool]:
    with DelayRelay(("127.0.0.1", cluster.port)) as relay:
        env = client_environment(workdir, workdir / "p256.cnf" if p256 else None)
        trips = psql_first_row(psql, _params(relay.port, sslmode, workdir, **extra), relay, env=env)
    return trips.count, trips.steps, trips.hello_retry


def test_plaintext_scram_and_select_1(server: tuple[TempCluster, Psql], workdir: Path) -> None:
    cluster, psql = server
    count, steps, retry = _first_row(psql, cluster, workdir, "disable", p256=False)
    assert steps == (TCP_HANDSHAKE, "StartupMessage", "password/SASL", "password/SASL", "Query")
    assert (count, retry) == (5, False)


def test_tls13_after_ssl_request_is_two_more(server: tuple[TempCluster, Psql], workdir: Path) -> None:
    """The floor before 17 (no direct SSL): what pgbatten hands out costs two round trips more."""
    cluster, psql = server
    count, steps, retry = _first_row(psql, cluster, workdir, "verify-full", p256=True)
    assert count == 7
    assert steps[:3] == (TCP_HANDSHAKE, "SSLRequest", "TLS ClientHello (key share secp256r1)")
    assert steps[3:] == ("encrypted",) * 4
    assert not retry


def test_hello_retry_request_costs_one_more(server: tuple[TempCluster, Psql], workdir: Path) -> None:
    """OpenSSL's default first key share is X25519; the server (<= 17) takes only P-256."""
    cluster, psql = server
    if cluster.bin.major >= 18:
        pytest.skip("PostgreSQL 18 takes X25519: no retry")
    count, steps, retry = _first_row(psql, cluster, workdir, "verify-full", p256=False)
    assert retry
    assert count == 8
    assert steps[2].startswith("TLS ClientHello (key share ")
    assert steps[2].endswith("-> HelloRetryRequest for secp256r1")
    assert steps[3] == "TLS ClientHello (key share secp256r1)"


def test_tls12_handshake_is_one_more_than_tls13(server: tuple[TempCluster, Psql], workdir: Path) -> None:
    cluster, psql = server
    count, steps, retry = _first_row(
        psql, cluster, workdir, "verify-full", p256=True, ssl_max_protocol_version="TLSv1.2"
    )
    assert count == 8
    assert steps[1:4] == ("SSLRequest", "TLS ClientHello", "TLS 1.2 key exchange")
    assert not retry


def test_delay_is_paid_once_per_round_trip(server: tuple[TempCluster, Psql], workdir: Path) -> None:
    """A lower bound by construction (the relay holds every flight), not a timing goal."""
    cluster, psql = server
    delay = 0.01
    with DelayRelay(("127.0.0.1", cluster.port), delay=delay) as relay:
        case = measure_psql("plaintext", psql, _params(relay.port, "disable", workdir), relay, runs=2)
    assert case.counts == (5, 5)
    assert case.consistent
    assert case.timing.minimum >= 5 * 2 * delay


def test_direct_ssl_drops_the_ssl_request(
    workdir: Path, cluster_templates: Callable[[PgBinaries], ClusterTemplate]
) -> None:
    """The floor on 17 with libpq 17: what pgbatten hands out costs one round trip more than plaintext."""
    binaries = newest_with(17)
    psql = Psql.at(binaries.path("psql"))
    if "sslnegotiation" not in psql.keywords:
        pytest.skip("the PostgreSQL 17 psql does not load libpq 17")
    with tls_cluster(binaries, workdir, cluster_templates(binaries)) as cluster:
        plaintext, _, _ = _first_row(psql, cluster, workdir, "disable", p256=False)
        direct = {"sslnegotiation": "direct"}
        count, steps, retry = _first_row(psql, cluster, workdir, "verify-full", p256=True, **direct)
        assert (count, retry) == (6, False)
        assert count == plaintext + 1
        assert steps[1] == "TLS ClientHello (key share secp256r1)"
        count, _, retry = _first_row(psql, cluster, workdir, "verify-full", p256=False, **direct)
        assert (count, retry) == (7, True)


def test_failed_login_is_one_clear_error(server: tuple[TempCluster, Psql], workdir: Path) -> None:
    cluster, psql = server
    with DelayRelay(("127.0.0.1", cluster.port)) as relay, pytest.raises(BenchError, match="password"):
        params = {**_params(relay.port, "disable", workdir), "password": "wrong"}
        psql_first_row(psql, params, relay, env=client_environment(workdir))


def test_relay_listens_on_loopback_only_and_reports_refused_upstream() -> None:
    with pytest.raises(UsageError):
        DelayRelay(("127.0.0.1", 1), listen_host="0.0.0.0")  # noqa: S104 - refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with DelayRelay(("127.0.0.1", closed_port)) as relay:
        with socket.create_connection((relay.host, relay.port), timeout=5) as client:
            client.sendall(b"hello")
            assert client.recv(10) == b""
        traces = relay.wait_finished(1)
    assert traces[0].error is not None
    assert "refused" in traces[0].error.lower()
