"""`pgbatten bench`: what each way of connecting costs on a user's own server, and the TLS tax."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pgbatten.bench.server import PHASES, BenchOptions, BenchReport, ModeResult, run_bench
from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console

if TYPE_CHECKING:
    from pgbatten.cluster.discover import Cluster
    from pgbatten.secure.plan import ClientAuth

NO_HRR_HINT = (
    "HRR: the server asked again for the key share (HelloRetryRequest): up to PostgreSQL 17 it takes only"
    " P-256, while OpenSSL clients send X25519 first. 'P-256 first' is the count with the client OpenSSL"
    " configuration in pgbatten's client bundles (pgbatten-openssl.cnf, loaded with OPENSSL_CONF)."
)
DIRECT_HINT = "sslnegotiation=direct (libpq 17+) saves the SSLRequest round trip on this server."


@contextlib.contextmanager
def bench_progress(total: int, *, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr; yields ``step(description)``. A no-op when not ``enabled``."""
    from pgbatten.report import progress_bar

    with progress_bar(total, enabled=enabled, description="bench") as step:
        yield step


def measure(base: Mapping[str, str], options: BenchOptions, *, quiet: bool = False) -> BenchReport:
    """``run_bench`` with a progress bar when stderr is a terminal."""
    with bench_progress(len(options.modes) * PHASES, enabled=not quiet and sys.stderr.isatty()) as step:
        return run_bench(base, options, progress=step)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}"


def _rate(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _way(result: ModeResult) -> str:
    if result.protocol and result.mode.label.split()[-1] not in result.protocol:
        return f"{result.mode.label} ({result.protocol})"
    return result.mode.label


def print_report(console: Console, report: BenchReport, *, title: str | None = None) -> None:
    """One row per way of connecting, then what TLS costs beyond plaintext."""
    version = f", PostgreSQL {report.server_version // 10000}" if report.server_version else ""
    libpq_major = report.libpq_version // 10000
    heading = title or f"{report.target}{version}, libpq {libpq_major}"
    table = Table(title=escape(heading), title_justify="left")
    for name in (
        "way",
        "round trips",
        "connect p50 ms",
        "p95 ms",
        "connections/s",
        "queries/s",
        "bulk MiB/s",
    ):
        table.add_column(name, justify="left" if name == "way" else "right")
    missing: list[str] = []
    for result in report.modes:
        if not result.allowed or result.round_trips is None:
            why = "not allowed" if not result.allowed else "failed"
            table.add_row(escape(result.mode.label), f"[dim]{why}[/dim]")
            missing.append(f"{result.mode.label}: {why}: {result.reason or 'no reason given'}")
            continue
        trips = result.round_trips
        retry = " [yellow](HRR)[/yellow]" if trips.hello_retry else ""
        if result.round_trips_p256 is not None:
            retry += f", P-256 first: {result.round_trips_p256.count}"
        bulk = _rate(result.bulk_mib_per_second, 1) + ("" if result.bulk_complete else "*")
        table.add_row(
            escape(_way(result)),
            f"{trips.count}{retry}",
            _ms(result.connect.median if result.connect else None),
            _ms(result.connect.p95 if result.connect else None),
            _rate(result.connections_per_second, 1),
            _rate(result.queries_per_second),
            bulk,
        )
    console.print(table)
    for line in [*missing, *notes(report)]:
        console.print(escape(line))


def notes(report: BenchReport) -> list[str]:
    """The sentences under the table: the tax beyond plaintext, and what would save round trips."""
    out: list[str] = []
    plain = next((m for m in report.modes if m.mode.value == "plaintext" and m.round_trips), None)
    measured = [m for m in report.modes if m.round_trips is not None and m.mode.value != "plaintext"]
    if plain is not None and plain.round_trips is not None:
        for m in measured:
            assert m.round_trips is not None
            extra = m.round_trips.count - plain.round_trips.count
            line = f"{m.mode.label}: {extra:+d} round trips per new connection beyond plaintext"
            if m.round_trips_p256 is not None:
                line += f" ({m.round_trips_p256.count - plain.round_trips.count:+d} with P-256 first)"
            out.append(line)
    if any(m.round_trips.hello_retry for m in measured if m.round_trips):
        out.append(NO_HRR_HINT)
    direct = next((m for m in measured if m.mode.value == "direct"), None)
    if direct is not None:
        out.append(DIRECT_HINT)
    if any(not m.bulk_complete for m in report.modes if m.allowed):
        out.append(f"* the bulk transfer was cut at --seconds {report.options.seconds:g}; the rate stands")
    return out


def print_tax(console: Console, before: BenchReport, after: BenchReport) -> None:
    """Before and after side by side: each way after, against the best plaintext figures before."""
    baseline = next(
        (m for m in (*after.modes, *before.modes) if m.mode.value == "plaintext" and m.round_trips), None
    )
    table = Table(title="the TLS tax: after against plaintext before", title_justify="left")
    for name in ("way", "round trips", "connect p50 ms", "connections/s", "queries/s", "bulk MiB/s"):
        table.add_column(name, justify="left" if name == "way" else "right")

    def row(label: str, m: ModeResult) -> None:
        assert m.round_trips is not None and m.connect is not None
        cells = [
            str(m.round_trips.count),
            _ms(m.connect.median),
            _rate(m.connections_per_second, 1),
            _rate(m.queries_per_second),
            _rate(m.bulk_mib_per_second, 1),
        ]
        if baseline is not None and baseline is not m and baseline.round_trips and baseline.connect:
            base = baseline.round_trips.count
            cells[0] += f" ({m.round_trips.count - base:+d})"
            if m.round_trips_p256 is not None:
                cells[0] += f", P-256 first {m.round_trips_p256.count} ({m.round_trips_p256.count - base:+d})"
            cells[1] += f" ({(m.connect.median - baseline.connect.median) * 1000:+.1f})"
        table.add_row(escape(label), *cells)

    if baseline is not None:
        row(f"before: {baseline.mode.label}", baseline)
    for m in before.modes:
        if m.round_trips is not None and m is not baseline and m.connect is not None:
            row(f"before: {_way(m)}", m)
    for m in after.modes:
        if m.round_trips is not None and m.connect is not None:
            row(f"after: {_way(m)}", m)
        elif m.mode.value == "plaintext" and not m.allowed:
            table.add_row("after: plaintext", "[green]refused[/green]")
    console.print(table)


def bench_for_secure(
    cluster: Cluster,
    *,
    ca_dir: Path | None,
    ca_passphrase: bytes | None,
    client_auth: ClientAuth,
    when: str,
    console: Console,
) -> BenchReport | None:
    """``secure --bench``: measure ``cluster`` before applying or after proving; never stops ``secure``.

    After, TLS ways verify the server with the CA (``verify-full``), as clients will; before, they only
    require TLS, since whatever certificate the server had is not what is measured.
    """
    from pgbatten.bench.cluster import bench_cluster
    from pgbatten.errors import PgBattenError
    from pgbatten.pki import CAStore, default_ca_dir

    store = CAStore(ca_dir or default_ca_dir())
    try:
        ca = store.load(ca_passphrase) if store.exists() else None
        ca_path = store.ca_cert_path if when == "after" and ca is not None else None
        with bench_progress(len(BenchOptions().modes) * PHASES, enabled=sys.stderr.isatty()) as step:
            report = bench_cluster(
                cluster, SECURE_BENCH, ca=ca, ca_path=ca_path, client_auth=client_auth, progress=step
            )
    except PgBattenError as exc:
        console.print(f"[yellow]bench {when}:[/] {escape(str(exc))}")
        return None
    print_report(console, report, title=f"bench {when}: {report.target}")
    return report


SECURE_BENCH = BenchOptions(connections=10, seconds=1.0)
"""What ``secure --bench`` measures each time: a few seconds per way of connecting."""


def report_json(report: BenchReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


@main.command("bench")
@click.option(
    "--dsn", required=True, metavar="DSN", help="The server to measure (key=value or URI), over TCP."
)
@click.option(
    "--connections",
    default=20,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="New connections per way of connecting.",
)
@click.option(
    "--seconds",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Time bound of each measurement.",
)
@opt.json_output("Print one JSON object.")
def bench_cmd(dsn: str, connections: int, seconds: float, as_json: bool) -> None:
    """Measure what each way of connecting costs: new-connection latency and rate, round trips, query rate
    and bulk transfer, for plaintext (if allowed), TLS 1.2, TLS 1.3 and direct SSL. Read-only."""
    import psycopg

    from pgbatten.errors import UsageError
    from pgbatten.libpq import user_params

    try:
        base = user_params(dsn)
    except psycopg.Error as exc:
        raise UsageError(f"invalid --dsn: {' '.join(str(exc).split())}") from exc
    if "," in base.get("host", "") or "," in base.get("hostaddr", ""):
        raise UsageError("--dsn names several hosts; bench measures one server")
    if base.get("host", "").startswith(("/", "@")) and "hostaddr" not in base:
        raise UsageError(
            "--dsn names a Unix socket; bench measures TCP connections (host=NAME or an address)"
        )
    report = measure(base, BenchOptions(connections=connections, seconds=seconds), quiet=as_json)
    if as_json:
        click.echo(report_json(report))
    else:
        print_report(make_console(), report)
