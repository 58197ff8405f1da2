"""How the pg_hba.conf work of `pgbatten secure` grows with the number of rules: 10 to 100,000.

For each size a generated file (what configuration management writes: a rule per user and network, some
with several databases, IPv4 and IPv6, netmask columns, plaintext and TLS rules, some shadowed) is parsed,
linted and planned in a fresh process, which also reports its peak memory. The growth column is the slope
of log(time) over log(rules) from the previous size: 1.0 is linear, 2.0 quadratic. A benchmark, not a test.

    python scripts/bench_scale_hba.py              # the table, 10 .. 100,000 rules
    python scripts/bench_scale_hba.py --max 1000   # a quick look
    python scripts/bench_scale_hba.py --e2e        # also `pgbatten secure --dry-run` on a real cluster

``scripts/bench_scale.py --only hba`` prints the end-to-end table with its growth (``end_to_end`` here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SIZES = (10, 100, 1_000, 10_000, 100_000)


def generate_hba(rules: int, seed: int = 1) -> str:
    """A pg_hba.conf of ``rules`` TCP rules below initdb's local lines, the same for the same seed."""
    rnd = random.Random(seed)
    out = [
        "# TYPE  DATABASE        USER            ADDRESS                 METHOD",
        "local   all             postgres                                peer",
        "local   all             all                                     peer",
    ]
    dbs = max(1, rules // 10)
    for i in range(rules):
        db = f"db_{rnd.randrange(dbs)}"
        user = f"user_{i}"
        a, b, c = rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)
        kind = rnd.random()
        if kind < 0.35:
            out.append(f"host    {db:<15} {user:<15} 10.{a}.{b}.0/24           scram-sha-256")
        elif kind < 0.6:
            out.append(f"hostssl {db:<15} {user:<15} 10.{a}.{b}.{c}/32         scram-sha-256")
        elif kind < 0.7:
            out.append(f"host    all             {user:<15} 192.168.{a}.0 255.255.255.0 md5")
        elif kind < 0.8:
            out.append(f"hostssl {db},{db}x      +grp_{a:<10} fd00:{a:x}::/64          cert")
        elif kind < 0.9:
            out.append(f"hostnossl all           all             172.16.{a}.0/24         reject")
        else:
            # The same user again on a network inside one above, often dead (shadowed).
            out.append(f"hostssl {db:<15} user_{rnd.randrange(i + 1):<10} 10.{a}.{b}.7/32  md5")
    return "\n".join(out) + "\n"


CONF = "listen_addresses = '*'\nport = 5432\n#ssl = off\n"


def measure_one(rules: int) -> dict[str, float]:
    """Parse, lint and plan one generated file in this process; the times and the peak memory."""
    from pgbatten.pgconf import hba as hba_mod
    from pgbatten.pgconf import pg_ident
    from pgbatten.pgconf import postgresql_conf as conf_mod
    from pgbatten.pki import CertificateAuthority
    from pgbatten.secure.hosts import MachineNames
    from pgbatten.secure.plan import ClusterState, SecureRequest, plan_secure, render_diff

    text = generate_hba(rules)
    pgdata = Path("/srv/pg/data")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    ca = CertificateAuthority.create(now=now)
    started = time.process_time()
    hba = hba_mod.parse_hba(text, pgdata / "pg_hba.conf", major=15)
    parsed = time.process_time()
    findings = hba_mod.lint(hba)
    linted = time.process_time()
    state = ClusterState(
        major=15,
        cert_dir=pgdata,
        conf_files=(conf_mod.parse_conf(CONF, pgdata / "postgresql.conf"),),
        hba=hba,
        ident=pg_ident.parse_ident("", pgdata / "pg_ident.conf"),
        listen_addresses="*",
        machine=MachineNames(hostnames=("db1.example.test",), addresses=("192.0.2.10",), ipv6_loopback=True),
    )
    before_plan = time.process_time()
    plan = plan_secure(state, SecureRequest(hosts=("db1.example.test",)), ca, now=now)
    planned = time.process_time()
    diff = render_diff(plan) if os.environ.get("BENCH_NO_DIFF") != "1" else ""
    diffed = time.process_time()
    return {
        "rules": rules,
        "parse": parsed - started,
        "lint": linted - parsed,
        "findings": len(findings),
        "plan": planned - before_plan,
        "diff": diffed - planned,
        "diff_mib": len(diff) / 2**20,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(rules: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(rules)], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _slope(prev: dict[str, float] | None, cur: dict[str, float], key: str) -> str:
    # Below ~10 ms the figure is start-up noise, not growth.
    if prev is None or prev[key] < 0.01 or cur[key] < 0.01:
        return "   -"
    return f"{math.log(cur[key] / prev[key]) / math.log(cur['rules'] / prev['rules']):4.2f}"


def table(max_rules: int) -> list[dict[str, float]]:
    rows = []
    print("pg_hba.conf rules: CPU seconds in one fresh process per size; growth = d log t / d log n")
    print(
        f"{'rules':>8} {'parse':>7} {'lint':>7} {'plan':>7} {'diff':>7} {'peak MiB':>9}"
        f" {'findings':>9}   growth: {'parse':>5} {'lint':>5} {'plan':>5}"
    )
    prev = None
    for n in (s for s in SIZES if s <= max_rules):
        r = _child(n)
        print(
            f"{n:>8,} {r['parse']:>7.3f} {r['lint']:>7.3f} {r['plan']:>7.3f} {r['diff']:>7.3f}"
            f" {r['peak_mib']:>9.0f} {int(r['findings']):>9,}          "
            f"{_slope(prev, r, 'parse'):>5} {_slope(prev, r, 'lint'):>5} {_slope(prev, r, 'plan'):>5}"
        )
        rows.append(r)
        prev = r
    print(
        "plan = both transforms and both lints (before and after), as secure runs them; diff = the text diff"
    )
    return rows


@dataclass(frozen=True)
class Run:
    """One ``pgbatten secure --dry-run``: wall and CPU seconds (user + system) and peak memory."""

    rules: int
    wall: float
    cpu: float
    max_rss_mib: float
    exit_code: int


def secure_dry_run(pgbatten: str, data_dir: Path, ca_dir: Path) -> Run:
    """Time one ``pgbatten secure --dry-run --pgdata DIR`` as a process of its own (output discarded)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [pgbatten, "secure", "--dry-run", "--pgdata", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PGBATTEN_CA_DIR": str(ca_dir)},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    return Run(
        rules=0,
        wall=time.monotonic() - started,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
        exit_code=os.waitstatus_to_exitcode(status),
    )


def end_to_end(sizes: Sequence[int], runs: int = 3) -> list[Run]:
    """`pgbatten secure --dry-run` on a running throwaway cluster whose pg_hba.conf has that many rules:
    the run with the least wall time of ``runs`` (the machine is shared), with the highest peak memory."""
    from pgbatten.cluster.temp import TempCluster

    pgbatten = shutil.which("pgbatten") or str(Path(sys.executable).parent / "pgbatten")
    results = []
    with TempCluster() as cluster, tempfile.TemporaryDirectory(prefix="pgbatten-bench-") as tmp:
        for n in sizes:
            cluster.hba_file.write_text(generate_hba(n))
            measured = [secure_dry_run(pgbatten, cluster.data_dir, Path(tmp) / "ca") for _ in range(runs)]
            best = min(measured, key=lambda r: r.wall)
            peak = max(r.max_rss_mib for r in measured)
            code = max(r.exit_code for r in measured)
            results.append(Run(n, best.wall, best.cpu, peak, code))
    return results


def print_end_to_end(sizes: Sequence[int]) -> None:
    print()
    print("pgbatten secure --dry-run on a real PostgreSQL cluster (best wall of 3, its CPU, peak MiB)")
    print(f"{'rules':>8} {'seconds':>8} {'CPU':>7} {'peak MiB':>9} {'exit':>5}")
    for r in end_to_end(sizes):
        print(f"{r.rules:>8,} {r.wall:>8.2f} {r.cpu:>7.2f} {r.max_rss_mib:>9.0f} {r.exit_code:>5}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max", type=int, default=SIZES[-1], help="largest size (default 100,000)")
    parser.add_argument("--e2e", action="store_true", help="also time secure --dry-run on a real cluster")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_one(args.one)))
        return 0
    table(args.max)
    if args.e2e:
        print_end_to_end(tuple(s for s in (10, 1_000, 10_000, 100_000) if s <= args.max))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
