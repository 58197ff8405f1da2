"""Kill a real `pgbatten secure` at every fault point and at random instants, and check the next run.

For each kill: a fresh seed-like cluster (ssl off, md5 over TCP, a plaintext `host` rule above `hostssl`)
and a fresh CA directory; `secure --yes` is killed (SIGKILL or SIGTERM, the process or its group) either
at a named step (`pgbatten.faults.POINTS`, paused there) or after a random delay; then a second `secure`
runs without faults. A kill passes when no configuration file is left unparseable, a SIGTERM before the
last proof restored every file, and the second run ends TLS-only and proved with no temp file, no leftover
proof role and the served certificate in the inventory. A benchmark-style script, not a test (CI runs a
handful of these kill points in tests/integration/test_secure_faults.py).

    python scripts/fault_sweep.py [--timed 20] [--points all|written,reloaded] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509

from pgbatten.cluster.binaries import find_binaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from pgbatten.faults import POINTS
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CAStore
from pgbatten.probe import check_target
from tests.faultlib import Run

SEED_HBA = """\
local   all   all                     peer
host    all   all   127.0.0.1/32      md5
host    all   all   ::1/128           md5
hostssl all   all   0.0.0.0/0         scram-sha-256
"""


def check_after(cluster: TempCluster, ca_dir: Path) -> str:
    """'' when a clean second run finishes the job, else what is wrong."""
    args = ["secure", "--pgdata", str(cluster.data_dir), "--yes", "--json", "--ca-dir", str(ca_dir)]
    code, out, err = Run(args).finish()
    if code != 0:
        return f"re-run exit {code}: {err.strip().splitlines()[-1:] or ''}"
    result = json.loads(out)
    if not all(p["ok"] for p in result["proofs"]):
        return "a proof failed"
    if check_target(f"127.0.0.1:{cluster.port}", timeout=5).plaintext_accepted is not False:
        return "plaintext still accepted"
    temps = [p.name for p in cluster.data_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    roles = cluster.sql().query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgbatten_verify_%'")
    if temps or roles:
        return f"leftovers: {temps} {roles}"
    served = x509.load_pem_x509_certificate((cluster.data_dir / "pgbatten-server.crt").read_bytes())
    if served.serial_number not in {e.serial for e in CAStore(ca_dir).entries()}:
        return "served certificate not in the inventory"
    return ""


def one(template: ClusterTemplate, *, point: str | None, delay: float, sig: int, group: bool) -> str:
    with (
        tempfile.TemporaryDirectory(prefix="pgbatten-sweep-") as tmp,
        TempCluster(hba=SEED_HBA, settings={"password_encryption": "md5"}, template=template) as cluster,
    ):
        ca_dir = Path(tmp) / "ca"
        before = {p.name: p.read_bytes() for p in cluster.data_dir.glob("*.conf")}
        args = ["secure", "--pgdata", str(cluster.data_dir), "--yes", "--ca-dir", str(ca_dir)]
        run = Run(args, pause=point)
        if point is not None and not run.wait_for_point(point):
            return f"never reached {point}"
        if point is None:
            time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):  # finished before the kill
            run.kill(sig, group=group)
        code, _, _ = run.finish()
        try:
            conf_mod.load_conf_tree(cluster.config_file)
        except Exception as exc:
            return f"config left unparseable: {exc}"
        after = {p.name: p.read_bytes() for p in cluster.data_dir.glob("*.conf")}
        # After the last proof the change is complete: a SIGTERM there leaves it (the commit point).
        if sig == signal.SIGTERM and code == 143 and after != before and point != "proved":
            return "SIGTERM did not restore every file"
        return check_after(cluster, ca_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timed", type=int, default=20, help="random-delay kills after the point kills")
    parser.add_argument("--points", default="all", help="comma-separated fault points, or all, or none")
    parser.add_argument("--max-delay", type=float, default=2.5, help="upper bound of a random delay (s)")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    points = (
        [] if options.points == "none" else (POINTS if options.points == "all" else options.points.split(","))
    )
    cases: list[tuple[str | None, float, int, bool]] = [
        (p, 0.0, s, g) for p in points for s in (signal.SIGKILL, signal.SIGTERM) for g in (False, True)
    ]
    cases += [
        (
            None,
            rng.uniform(0.1, options.max_delay),
            rng.choice((signal.SIGKILL, signal.SIGTERM)),
            rng.random() < 0.5,
        )
        for _ in range(options.timed)
    ]
    failures = 0
    started = time.monotonic()
    with ClusterTemplate(find_binaries()) as template:
        print(f"{'kill at':<22} {'signal':<8} {'target':<8} result")
        for point, delay, sig, group in cases:
            outcome = one(template, point=point, delay=delay, sig=sig, group=group)
            failures += bool(outcome)
            where = point or f"{delay:.2f} s"
            target = "group" if group else "process"
            print(f"{where:<22} {signal.Signals(sig).name:<8} {target:<8} {outcome or 'ok'}")
    print(f"{len(cases)} kills, {failures} failures, {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
