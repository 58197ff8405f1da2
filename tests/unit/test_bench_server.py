"""`pgbatten bench` without a server: the parameters of each way of connecting, and what is printed."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pgbatten import libpq
from pgbatten.bench.flights import TCP_HANDSHAKE, RoundTrips, Step
from pgbatten.bench.server import BenchOptions, BenchReport, Mode, ModeResult, mode_params
from pgbatten.bench.stats import Timing
from pgbatten.cli.bench_cmd import notes, print_report, print_tax
from pgbatten.errors import UsageError


def test_plaintext_disables_tls_and_drops_direct() -> None:
    out = mode_params({"host": "db", "sslmode": "verify-full", "sslnegotiation": "direct"}, Mode.PLAINTEXT)
    assert isinstance(out, dict)
    assert out["sslmode"] == "disable"
    assert "sslnegotiation" not in out


@pytest.mark.parametrize("given", [None, "prefer", "allow", "disable"])
def test_tls_modes_never_accept_a_plaintext_fallback(given: str | None) -> None:
    base = {"host": "db"} if given is None else {"host": "db", "sslmode": given}
    out = mode_params(base, Mode.TLS13)
    assert isinstance(out, dict)
    assert out["sslmode"] == "require"
    assert out["ssl_min_protocol_version"] == out["ssl_max_protocol_version"] == "TLSv1.3"


def test_tls_modes_keep_the_users_verification() -> None:
    out = mode_params({"host": "db", "sslmode": "verify-full", "sslrootcert": "/ca.crt"}, Mode.TLS12)
    assert isinstance(out, dict)
    assert (out["sslmode"], out["sslrootcert"]) == ("verify-full", "/ca.crt")
    assert out["ssl_min_protocol_version"] == out["ssl_max_protocol_version"] == "TLSv1.2"
    if libpq.libpq_knows("sslnegotiation"):
        assert out["sslnegotiation"] == "postgres"


def test_direct_needs_a_libpq_that_knows_it() -> None:
    out = mode_params({"host": "db"}, Mode.DIRECT)
    if libpq.libpq_knows("sslnegotiation"):
        assert isinstance(out, dict) and out["sslnegotiation"] == "direct"
    else:
        assert isinstance(out, str) and "libpq 17" in out


def test_options_are_bounded() -> None:
    with pytest.raises(UsageError):
        BenchOptions(connections=0)
    with pytest.raises(UsageError):
        BenchOptions(seconds=0)


def _trips(*steps: Step) -> RoundTrips:
    return RoundTrips(
        exchanges=(Step(TCP_HANDSHAKE), *steps), latency=0.01, bytes_from_client=1, bytes_from_server=1
    )


def _measured(mode: Mode, trips: RoundTrips, p256: RoundTrips | None = None) -> ModeResult:
    return ModeResult(
        mode=mode,
        allowed=True,
        protocol=None if mode is Mode.PLAINTEXT else "TLSv1.3",
        round_trips=trips,
        round_trips_p256=p256,
        connect=Timing.of([0.01, 0.02]),
        connections_per_second=50.0,
        queries_per_second=1000.0,
        bulk_bytes=1024 * 1024,
        bulk_seconds=0.5,
        bulk_complete=mode is not Mode.DIRECT,
    )


def _report(*modes: ModeResult) -> BenchReport:
    return BenchReport(
        target="db:5432", server_version=150018, libpq_version=180006, modes=modes, elapsed=1.0
    )


PLAIN = _trips(Step("StartupMessage"), Step("password/SASL"), Step("password/SASL"), Step("Query"))
RETRY = _trips(
    Step("SSLRequest"),
    Step("TLS ClientHello", ("x25519",), retry_for="secp256r1"),
    Step("TLS ClientHello", ("secp256r1",)),
    *[Step("encrypted")] * 4,
)
NO_RETRY = _trips(Step("SSLRequest"), Step("TLS ClientHello", ("secp256r1",)), *[Step("encrypted")] * 4)


def test_notes_say_the_tax_and_the_saving() -> None:
    report = _report(
        _measured(Mode.PLAINTEXT, PLAIN),
        _measured(Mode.TLS13, RETRY, NO_RETRY),
        ModeResult(mode=Mode.DIRECT, allowed=False, reason="PostgreSQL 15 has no direct SSL (it needs 17)"),
    )
    lines = notes(report)
    assert lines[0] == "TLS 1.3: +3 round trips per new connection beyond plaintext (+2 with P-256 first)"
    assert any("HelloRetryRequest" in line for line in lines)
    assert not any("sslnegotiation=direct" in line for line in lines)
    out = io.StringIO()
    print_report(Console(file=out, width=200), report)
    text = out.getvalue()
    assert "8 (HRR), P-256 first: 7" in text
    assert "direct TLS 1.3: not allowed: PostgreSQL 15 has no direct SSL (it needs 17)" in text


def test_tax_side_by_side_marks_plaintext_refused_after() -> None:
    before = _report(_measured(Mode.PLAINTEXT, PLAIN), _measured(Mode.TLS13, RETRY))
    after = _report(
        ModeResult(mode=Mode.PLAINTEXT, allowed=False, reason="no pg_hba.conf entry ... no encryption"),
        _measured(Mode.TLS13, NO_RETRY),
    )
    out = io.StringIO()
    print_tax(Console(file=out, width=200), before, after)
    text = out.getvalue()
    assert "before: plaintext" in text
    assert "after: plaintext" in text and "refused" in text
    assert "7 (+2)" in text
