"""Benchmark: ``pgbatten check`` on a 20-target fleet of which 10 are unreachable, with --timeout 3.

Ten loopback fake PostgreSQL servers speaking real TLS (Python's ssl, full audit: enumeration, plaintext and
direct-SSL probes), five closed ports (refused at once) and five blackholed ports (TCP connects, nothing
ever answers: each costs a full timeout). Prints the wall time; asserts only the results, not the time.

    .venv/bin/python scripts/bench_fleet.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgbatten.probe import check_target, exit_status
from pgbatten.probe.check import CheckResult
from pgbatten.probe.fleet import run_fleet
from pgbatten.probe.wire import Target
from tests.unit.test_fleet import fleet

TIMEOUT = 3.0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, fleet(Path(tmp)) as targets:

        def probe(target: Target) -> CheckResult:
            return check_target(target, timeout=TIMEOUT, full=True)

        start = time.monotonic()
        results = run_fleet(targets, probe, concurrency=16, per_server=1)
        elapsed = time.monotonic() - start
    reachable = [r for r in results if r.reachable]
    assert len(reachable) == 10 and all(r.protocols == ("TLSv1.2", "TLSv1.3") for r in reachable)
    assert exit_status(results) == 3
    conns = sum(r.connections_used for r in results)
    print(f"20 targets (10 unreachable: 5 refused, 5 blackholed), --timeout {TIMEOUT:g}, full audit")
    print(f"wall time {elapsed:.2f} s, {conns} connections in all")
    slowest = max(results, key=lambda r: r.elapsed)
    print(f"slowest target {slowest.target}: {slowest.elapsed:.2f} s ({slowest.error or 'ok'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
