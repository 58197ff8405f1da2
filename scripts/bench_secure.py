"""What one `pgbatten secure` costs: wall time and backends forked, first run and the idempotent second.

Starts a throwaway cluster set up like the seed (ssl off, md5 over TCP, a plaintext `host` rule above
`hostssl`), runs `secure` twice with a throwaway CA, and counts the server's `connection received` log lines
(log_connections is on in throwaway clusters). A benchmark, not a test.

    python scripts/bench_secure.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.secure import SecureRequest, secure

SEED_HBA = """\
local   all   all                     peer
host    all   all   127.0.0.1/32      md5
host    all   all   ::1/128           md5
hostssl all   all   0.0.0.0/0         scram-sha-256
"""


def backends(log: str) -> tuple[int, int]:
    lines = [line for line in log.splitlines() if "connection received" in line]
    return len(lines), sum("host=[local]" not in line for line in lines)


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="pgbatten-bench-") as tmp,
        TempCluster(hba=SEED_HBA, settings={"password_encryption": "md5"}) as cluster,
    ):
        request = SecureRequest(hosts=("db.example.test",), ca_dir=Path(tmp) / "ca")
        print(f"{'run':<8} {'seconds':>8} {'backends':>9} {'over TCP':>9} {'changed':>8} {'proofs ok':>10}")
        for run in ("first", "second"):
            before_all, before_tcp = backends(cluster.log_text())
            started = time.monotonic()
            result = secure(discover(pgdata=cluster.data_dir), request)
            elapsed = time.monotonic() - started
            after_all, after_tcp = backends(cluster.log_text())
            ok = all(p.ok for p in result.proofs)
            print(
                f"{run:<8} {elapsed:>8.2f} {after_all - before_all:>9} {after_tcp - before_tcp:>9}"
                f" {result.plan.changed!s:>8} {ok!s:>10}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
