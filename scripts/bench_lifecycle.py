"""What the lifecycle commands cost a server: wall time and backends forked for `status`, a `renew` with
nothing due, a `renew` that replaces the server certificate, and a `renew` during a CA rotation (which
proves verify-full with the old root, the new root and both).

Starts a throwaway cluster, secures it with a throwaway CA (client certificates verified, so a CRL is in
force after one revocation), and counts the server's `connection received` log lines (log_connections is
on in throwaway clusters). A benchmark, not a test.

    python scripts/bench_lifecycle.py
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.lifecycle import status
from pgbatten.lifecycle.renew import RenewOptions, renew
from pgbatten.lifecycle.rotation import rotate
from pgbatten.pki import CAStore, ClusterRef
from pgbatten.secure import SecureRequest, secure

HBA = """\
local   all   all                     peer
host    all   all   127.0.0.1/32      scram-sha-256
host    all   all   ::1/128           scram-sha-256
"""


def backends(log: str) -> tuple[int, int]:
    lines = [line for line in log.splitlines() if "connection received" in line]
    return len(lines), sum("host=[local]" not in line for line in lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pgbatten-bench-") as tmp, TempCluster(hba=HBA) as cluster:
        ca_dir = Path(tmp) / "ca"
        secure(
            discover(pgdata=cluster.data_dir),
            SecureRequest(ca_dir=ca_dir, client_auth="verify-full"),
        )
        store = CAStore(ca_dir)
        ca = store.load()
        store.record(ca.issue_client("mallory"), "client", "mallory")
        store.revoke("mallory")
        ref = ClusterRef.data_directory(cluster.data_dir)
        options = RenewOptions(clusters=(ref,), yes=True)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)

        steps: list[tuple[str, Callable[[], object]]] = [
            ("status", lambda: status(ca_dir, [ref])),
            ("renew (signs the first CRL)", lambda: renew(ca_dir, options, log=lambda _m: None)),
            ("renew, nothing due", lambda: renew(ca_dir, options, log=lambda _m: None)),
            (
                "renew, certificate due",
                lambda: renew(
                    ca_dir, RenewOptions(clusters=(ref,), yes=True, now=later), log=lambda _m: None
                ),
            ),
            ("ca rotate (CA dir only)", lambda: rotate(ca_dir)),
            ("renew, switch to new CA", lambda: renew(ca_dir, options, log=lambda _m: None)),
            ("status during the overlap", lambda: status(ca_dir, [ref])),
        ]
        print(f"{'step':<28} {'seconds':>8} {'backends':>9} {'over TCP':>9}")
        for name, step in steps:
            before_all, before_tcp = backends(cluster.log_text())
            started = time.monotonic()
            result = step()
            elapsed = time.monotonic() - started
            failed = getattr(result, "failed", ())
            if failed:
                raise SystemExit(f"{name}: failed: {failed}")
            after_all, after_tcp = backends(cluster.log_text())
            print(f"{name:<28} {elapsed:>8.2f} {after_all - before_all:>9} {after_tcp - before_tcp:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
