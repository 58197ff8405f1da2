"""How much does TLS cost a PostgreSQL server that forks a backend per connection, by key type?

Starts one throwaway cluster, then for plaintext and for each server key type runs pgbench with a new
connection per transaction (``-C``, select-only), so that every transaction pays a full handshake. Prints
transactions per second and the ratio to plaintext. A benchmark, not a test: figures vary with the machine.

    python scripts/bench_handshake.py [--seconds 5] [--clients 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

from pgbatten.cluster.temp import TempCluster
from pgbatten.fsutil import atomic_write
from pgbatten.pki import CertificateAuthority, KeyType
from pgbatten.secure.apply import reload_and_wait

# Trust on both kinds of TCP connection: we measure the handshake, not password hashing.
HBA = """\
local   all all                peer
hostssl all all 127.0.0.1/32   trust
host    all all 127.0.0.1/32   trust
"""


def pgbench(cluster: TempCluster, sslmode: str, seconds: int, clients: int) -> float:
    binary = shutil.which("pgbench") or str(cluster.bin.path("pgbench"))
    env = {**os.environ, "PGSSLMODE": sslmode}
    args = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.superuser]
    result = subprocess.run(
        [
            binary,
            *args,
            "-C",
            "-S",
            "-n",
            "-T",
            str(seconds),
            "-c",
            str(clients),
            "-j",
            str(clients),
            "postgres",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if match is None:
        raise SystemExit(f"cannot read pgbench output:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


def install_certificate(cluster: TempCluster, ca: CertificateAuthority, key_type: KeyType) -> None:
    issued = ca.issue_server(["localhost", "127.0.0.1"], key_type=key_type)
    owner = cluster.owner.ids if os.geteuid() == 0 else None
    atomic_write(cluster.data_dir / "bench.crt", issued.cert_pem(), mode=0o644, owner=owner)
    atomic_write(cluster.data_dir / "bench.key", issued.key_pem(), mode=0o600, owner=owner)
    if cluster.started:
        reload_and_wait(cluster.sql())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    options = parser.parse_args()
    ca = CertificateAuthority.create()
    settings = {
        "ssl": "on",
        "ssl_cert_file": "'bench.crt'",
        "ssl_key_file": "'bench.key'",
        "ssl_min_protocol_version": "'TLSv1.2'",
    }
    cluster = TempCluster(hba=HBA, settings=settings, listen_ipv6=False)
    try:
        cluster.init()
        install_certificate(cluster, ca, KeyType.ECDSA_P256)
        cluster.start()
        binary = shutil.which("pgbench") or str(cluster.bin.path("pgbench"))
        subprocess.run(
            [
                binary,
                "-i",
                "-q",
                "-s",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "-U",
                cluster.superuser,
                "postgres",
            ],
            capture_output=True,
            check=True,
        )
        plain = pgbench(cluster, "disable", options.seconds, options.clients)
        print(f"{'connection':<22} {'tps':>9} {'vs plaintext':>13}")
        print(f"{'plaintext':<22} {plain:>9.1f} {1.0:>13.2f}")
        for key_type in (KeyType.ECDSA_P256, KeyType.RSA_2048, KeyType.RSA_3072, KeyType.RSA_4096):
            install_certificate(cluster, ca, key_type)
            tps = pgbench(cluster, "require", options.seconds, options.clients)
            print(f"{'TLS ' + key_type.value:<22} {tps:>9.1f} {tps / plain:>13.2f}")
    finally:
        cluster.cleanup()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
