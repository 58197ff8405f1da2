"""How pgbatten's costs grow with the work: a table per cost, sizes up to 100,000, with the inferred growth.

Each section is independent (``--only NAME`` runs one; every section is a function in ``SECTIONS``):

- ``crl``: signing the CA's CRL (``pgbatten crl refresh`` without a cluster) with 1 to 100,000 revoked
  certificates in the inventory: time and size.
- ``inventory``: with 0 to 100,000 certificates already issued, the time to issue one more client bundle
  (``pgbatten cert client``, in process) and to list them all (``pgbatten cert list``, a real process).
- ``startup``: ``pgbatten --help`` against Python's and click's own start-up.
- ``hba``: ``pgbatten secure --dry-run`` end to end (a process, start-up included) on a running throwaway
  cluster whose pg_hba.conf has 10 to 100,000 generated rules (``bench_scale_hba.py`` generates them and
  times the steps inside one process): seconds and peak memory (max RSS).
- ``pg-crl``: what the CRL costs PostgreSQL itself: a throwaway cluster verifying client certificates,
  pgbench opening a new TLS connection per transaction with a client certificate, and a CRL of 1, 10,000
  or 100,000 entries written in random order (as CRLs used to be) and sorted by serial (as pgbatten writes
  them). Each new backend sorts the revoked list before its first lookup, so the order matters.

A benchmark, not a test: figures vary with the machine and its load. ``--small`` runs every section at
small sizes (the smoke test does).

    python scripts/bench_scale.py [--small] [--only startup|hba|crl|inventory|pg-crl] [--seconds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from pgbatten.pki import CAStore, CertificateAuthority, InventoryEntry
from pgbatten.pki import operations as ops

NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Options:
    small: bool
    seconds: int
    clients: int
    work: Path


# -- shared helpers ---------------------------------------------------------------------------------------


def growth(sizes: Sequence[int], times: Sequence[float]) -> str:
    """The exponent k of time ~ n^k between the two largest sizes (what dominates at scale)."""
    points = [(n, t) for n, t in zip(sizes, times, strict=True) if n > 0 and t > 0]
    if len(points) < 2:
        return "n/a"
    (n1, t1), (n2, t2) = points[-2], points[-1]
    k = math.log(t2 / t1) / math.log(n2 / n1)
    if k < 0.3:
        shape = "constant"
    elif k < 0.8:
        shape = "sublinear"
    elif k < 1.3:
        shape = "linear"
    elif k < 1.7:
        shape = "worse than n log n"
    else:
        shape = "quadratic or worse"
    return f"n^{k:.2f} ({shape}, from {n1:,} to {n2:,})"


@dataclass(frozen=True)
class Timing:
    """Median wall time and CPU time (this process and its children) of a few runs, in seconds.

    On a machine shared with other work the wall time includes waiting for a core; the CPU time is what
    the work itself cost.
    """

    wall: float
    cpu: float

    def ms(self) -> str:
        return f"{self.wall * 1000:,.1f} ms (CPU {self.cpu * 1000:,.1f})"

    def s(self) -> str:
        return f"{self.wall:,.2f} s (CPU {self.cpu:,.2f})"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_of(runs: int, action: Callable[[], object]) -> Timing:
    """The median wall and CPU time of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), _cpu()
        action()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus))


def synthetic_entries(count: int, *, revoked_every: int, start: int = 0) -> Iterator[InventoryEntry]:
    """Inventory entries as ``cert client`` would record them, without paying for real certificates."""
    rng = random.Random(start)
    for i in range(start, start + count):
        revoked = revoked_every > 0 and i % revoked_every == 0
        yield InventoryEntry(
            kind="client",
            name=f"user{i}",
            serial=x509.random_serial_number(),
            not_after=NOW + dt.timedelta(days=rng.randint(31, 365)),
            fingerprint_sha256=":".join(f"{rng.randrange(256):02X}" for _ in range(32)),
            revoked_at=NOW - dt.timedelta(minutes=1) if revoked else None,
        )


def fresh_store(options: Options, name: str) -> tuple[CAStore, CertificateAuthority]:
    path = options.work / name
    shutil.rmtree(path, ignore_errors=True)
    store = CAStore(path)
    return store, store.init()


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


# -- section: CRL signing ---------------------------------------------------------------------------------


def section_crl(options: Options) -> None:
    sizes = [1, 100, 1_000] if options.small else [1, 10, 100, 1_000, 10_000, 100_000]
    store, ca = fresh_store(options, "crl")
    rows, times = [], []
    have = 0
    for size in sizes:
        store.inventory.add_many(synthetic_entries(size - have, revoked_every=1, start=have))
        have = size
        timing = best_of(3, lambda: ops.refresh_crl(store, ca))
        crl = store.load_crl()
        assert crl is not None and len(crl) == size
        times.append(timing.cpu)
        rows.append([f"{size:,}", timing.ms(), f"{store.crl_path.stat().st_size / 1024:,.1f} KiB"])
    table("CRL: sign and write (crl refresh)", ["revoked entries", "time", "size (PEM)"], rows)
    print(f"\ngrowth (CPU): {growth(sizes, times)}")


# -- section: inventory -----------------------------------------------------------------------------------


def section_inventory(options: Options) -> None:
    sizes = [0, 100, 1_000] if options.small else [0, 1_000, 10_000, 100_000]
    store, ca = fresh_store(options, "inventory")
    pgbatten = Path(sys.executable).with_name("pgbatten")
    rows, issue_times, list_times = [], [], []
    have = 0
    counter = iter(range(10**9))
    for size in sizes:
        # Every tenth certificate revoked, so the listing reads a CRL too.
        store.inventory.add_many(synthetic_entries(size - have, revoked_every=10, start=have))
        have = size
        ops.refresh_crl(store, ca)

        def issue() -> None:
            n = next(counter)
            request = ops.prepare_client_bundle(
                store,
                f"bench{n}",
                out_dir=options.work / "bundles" / str(n),
                key_type="ecdsa-p256",
                days=365,
                server_host="db.example.com",
                port=5432,
                dbname="postgres",
                force=False,
                p12_password=b"bench",
            )
            ops.issue_client_bundle(store, ca, request)

        issue_timing = best_of(3, issue)
        have += 3

        def listing(*extra: str) -> None:
            subprocess.run(
                [str(pgbatten), "cert", "list", "--ca-dir", str(store.path), *extra],
                stdout=subprocess.DEVNULL,
                check=True,
            )

        list_timing = best_of(1 if size >= 100_000 else 3, listing)
        json_timing = best_of(1 if size >= 100_000 else 3, lambda: listing("--json"))
        issue_times.append(issue_timing.cpu)
        list_times.append(list_timing.cpu)
        rows.append([f"{size:,}", issue_timing.ms(), list_timing.s(), json_timing.s()])
    table(
        "Inventory: issue one more client bundle, list every certificate",
        ["certificates", "issue (cert client)", "cert list", "cert list --json"],
        rows,
    )
    print(f"\ngrowth of issue (CPU): {growth(sizes, issue_times)}")
    print(f"growth of list (CPU):  {growth(sizes, list_times)}")


# -- section: PostgreSQL's cost per connection with a CRL -------------------------------------------------

PG_HBA = """\
local   all all                peer
hostssl all all 127.0.0.1/32   cert
"""
PGBENCH_SCRIPT = "SELECT 1;\n"


def unsorted_crl(ca: CertificateAuthority, serials: Sequence[int]) -> bytes:
    """A CRL in the given (random) order, as CRLs were written before pgbatten sorted them."""
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca.certificate.subject,
        last_update=NOW,
        next_update=NOW + dt.timedelta(days=30),
        extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(1))],
        revoked_certificates=[
            x509.RevokedCertificateBuilder().serial_number(s).revocation_date(NOW).build() for s in serials
        ],
    )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def sorted_crl(ca: CertificateAuthority, serials: Sequence[int]) -> bytes:
    crl = ca.build_crl([(s, NOW) for s in serials], number=1, now=NOW)
    return crl.public_bytes(serialization.Encoding.PEM)


def pgbench_connection_ms(
    cluster: object, port: int, user: str, env: dict[str, str], seconds: int, clients: int, script: Path
) -> tuple[float, float]:
    """(average connection time in ms, transactions per second) with a new connection per transaction."""
    binary = shutil.which("pgbench")
    if binary is None:
        raise SystemExit("pgbench not found")
    result = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-U", user, "-C", "-n", "-f", str(script),
         "-T", str(seconds), "-c", str(clients), "-j", str(clients), "postgres"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )  # fmt: skip
    conn = re.search(r"average connection time = ([0-9.]+) ms", result.stdout)
    tps = re.search(r"tps = ([0-9.]+)", result.stdout)
    if result.returncode != 0 or conn is None or tps is None:
        raise SystemExit(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
    return float(conn.group(1)), float(tps.group(1))


def section_pg_crl(options: Options) -> None:
    from pgbatten.cluster.temp import TempCluster
    from pgbatten.fsutil import atomic_write
    from pgbatten.secure.apply import reload_and_wait

    sizes = [1, 1_000] if options.small else [1, 10_000, 100_000]
    ca = CertificateAuthority.create()
    work = options.work / "pg-crl"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = {
        "ssl": "on",
        "ssl_cert_file": "'bench.crt'",
        "ssl_key_file": "'bench.key'",
        "ssl_ca_file": "'bench-ca.crt'",
        "ssl_crl_file": "'bench.crl'",
    }
    cluster = TempCluster(hba=PG_HBA, settings=settings, listen_ipv6=False)
    try:
        owner = cluster.owner.ids if os.geteuid() == 0 else None

        def put(name: str, data: bytes, mode: int = 0o644) -> None:
            atomic_write(cluster.data_dir / name, data, mode=mode, owner=owner)

        cluster.init()
        server = ca.issue_server(["localhost", "127.0.0.1"])
        put("bench.crt", server.cert_pem())
        put("bench.key", server.key_pem(), 0o600)
        put("bench-ca.crt", ca.cert_pem())
        put("bench.crl", sorted_crl(ca, [1]))
        cluster.start()
        client = ca.issue_client(cluster.superuser)
        (work / "client.crt").write_bytes(client.cert_pem())
        key_file = work / "client.key"
        key_file.write_bytes(client.key_pem())
        key_file.chmod(0o600)
        script = work / "select1.sql"
        script.write_text(PGBENCH_SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGSSLMODE="require",
            PGSSLCERT=str(work / "client.crt"),
            PGSSLKEY=str(key_file),
            PGPASSFILE=os.devnull,
            PGGSSENCMODE="disable",
        )
        rng = random.Random(42)
        rows = []
        baseline: float | None = None
        for size in sizes:
            serials = [rng.randrange(1, 2**159) for _ in range(size)]
            for order, data in (
                ("random order", unsorted_crl(ca, serials)),
                ("sorted", sorted_crl(ca, serials)),
            ):
                put("bench.crl", data)
                reload_and_wait(cluster.sql())
                ms, tps = pgbench_connection_ms(
                    cluster, cluster.port, cluster.superuser, env, options.seconds, options.clients, script
                )
                if baseline is None:
                    baseline = ms
                rows.append(
                    [f"{size:,}", order, f"{len(data) / 1024:,.0f} KiB", f"{ms:.2f} ms",
                     f"+{ms - baseline:.2f} ms", f"{tps:.1f}"]
                )  # fmt: skip
    finally:
        cluster.cleanup()
    table(
        f"PostgreSQL: new TLS connection with a client certificate (pgbench -C, {options.clients} clients, "
        f"{options.seconds} s each)",
        ["CRL entries", "CRL order", "CRL size", "connection time", "vs 1 entry", "tps"],
        rows,
    )


# -- section: pg_hba.conf rules, secure --dry-run end to end ---------------------------------------------


def section_hba(options: Options) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_scale_hba import end_to_end

    sizes = [10, 1_000] if options.small else [10, 1_000, 10_000, 100_000]
    repeat = 1 if options.small else 3
    runs = end_to_end(sizes, runs=repeat)
    rows = [
        [f"{r.rules:,}", f"{r.wall:.2f} s", f"{r.cpu:.2f} s", f"{r.max_rss_mib:.0f} MiB", str(r.exit_code)]
        for r in runs
    ]
    table(
        f"pg_hba.conf rules: pgbatten secure --dry-run end to end (best wall of {repeat})",
        ["rules", "wall", "CPU", "max RSS", "exit"],
        rows,
    )
    # What the rules add, above start-up and the rest of the run (the 10-rule figure).
    base, rest = runs[0], runs[1:]
    sizes_above = [r.rules for r in rest]
    cpu_growth = growth(sizes_above, [r.cpu - base.cpu for r in rest])
    rss_growth = growth(sizes_above, [r.max_rss_mib - base.max_rss_mib for r in rest])
    print(f"\ngrowth of CPU above the 10-rule run: {cpu_growth}")
    print(f"growth of max RSS above the 10-rule run: {rss_growth}")


# -- section: start-up -------------------------------------------------------------------------------------


def section_startup(options: Options) -> None:
    runs = 5 if options.small else 30
    python = sys.executable
    pgbatten = str(Path(python).with_name("pgbatten"))
    rows = []
    for label, argv in (
        ("python -c pass", [python, "-c", "pass"]),
        ("python -c 'import click'", [python, "-c", "import click"]),
        ("pgbatten --help", [pgbatten, "--help"]),
        ("pgbatten cert --help", [pgbatten, "cert", "--help"]),
    ):
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
            walls.append(time.perf_counter() - start)
        # The best run: what the command costs when it does not wait for a core (the machine is shared).
        rows.append([label, f"{min(walls) * 1000:.0f} ms", f"{statistics.median(walls) * 1000:.0f} ms"])
    table(f"Start-up ({runs} runs each)", ["command", "best", "median"], rows)


SECTIONS: dict[str, Callable[[Options], None]] = {
    "startup": section_startup,
    "hba": section_hba,
    "crl": section_crl,
    "inventory": section_inventory,
    "pg-crl": section_pg_crl,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", action="store_true", help="small sizes only (a smoke test)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section")
    parser.add_argument("--seconds", type=int, default=None, help="pgbench seconds per run (default 3)")
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (1 if args.small else 3)
    with tempfile.TemporaryDirectory(prefix="pgbatten-bench-") as tmp:
        options = Options(small=args.small, seconds=seconds, clients=args.clients, work=Path(tmp))
        for name in args.only or list(SECTIONS):
            SECTIONS[name](options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
