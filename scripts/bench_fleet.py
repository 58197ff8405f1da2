"""Benchmark: ``pgbatten check`` on a fleet where unresponsive targets come first.

Loopback fake PostgreSQL servers speaking real TLS (Python's ssl, full audit: enumeration, plaintext and
direct-SSL probes), closed ports (refused at once) and blackholed ports (TCP connects, nothing ever answers:
each costs a full timeout). The unresponsive targets are listed first, the way they hold up the rest when
each keeps a concurrency slot while silent. Prints the wall time and when the responsive targets finished;
asserts only the results, not the time.

    .venv/bin/python scripts/bench_fleet.py [--reachable 10] [--closed 5] [--holes 5] [--concurrency 16]
                                            [--timeout 3]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509

from pgbatten.probe import check_target, exit_status
from pgbatten.probe.fleet import run_fleet
from pgbatten.probe.result import CheckResult
from pgbatten.probe.wire import Target
from tests.unit.test_fleet import TlsPg, blackhole, closed_port
from tests.unit.test_probe_fakeservers import FakeServer, make_pki, server_context


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reachable", type=int, default=10)
    parser.add_argument("--closed", type=int, default=5)
    parser.add_argument("--holes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        pki = make_pki(Path(tmp), sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        ctx = server_context(pki)
        servers = [
            stack.enter_context(FakeServer(TlsPg(ctx), max_connections=80)) for _ in range(args.reachable)
        ]
        holes = [stack.enter_context(blackhole()) for _ in range(args.holes)]
        closed = [closed_port() for _ in range(args.closed)]
        targets = [Target("127.0.0.1", p) for p in holes + closed] + [s.target for s in servers]
        finished: dict[Target, float] = {}
        start = time.monotonic()

        def probe(target: Target) -> CheckResult:
            result = check_target(target, timeout=args.timeout, full=True)
            finished[target] = time.monotonic() - start
            return result

        results = run_fleet(targets, probe, concurrency=args.concurrency, per_server=1)
        elapsed = time.monotonic() - start
    reachable = [r for r in results if r.reachable]
    assert len(reachable) == args.reachable and all(r.protocols == ("TLSv1.2", "TLSv1.3") for r in reachable)
    assert exit_status(results) == (3 if args.holes + args.closed else 0)
    conns = sum(r.connections_used for r in results)
    last_responsive = max((finished[r.target] for r in reachable), default=0.0)
    print(
        f"{len(targets)} targets ({args.holes} blackholed and {args.closed} refused listed first, "
        f"{args.reachable} answering), --concurrency {args.concurrency}, --timeout {args.timeout:g}, "
        "full audit"
    )
    print(
        f"wall time {elapsed:.2f} s, responsive targets all done after {last_responsive:.2f} s, "
        f"{conns} connections"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
