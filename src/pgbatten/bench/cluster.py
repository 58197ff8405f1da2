"""``pgbatten bench`` on a cluster pgbatten manages: the login ``secure --bench`` measures with.

A throwaway role with a random password (stored as a SCRAM secret, valid for ten minutes, and, when the
cluster checks client certificates, a one-day certificate from the CA) logs in over TCP at the first
address the server really listens on, exactly like ``secure``'s own proofs; it is dropped afterwards.
"""

from __future__ import annotations

from pathlib import Path

from pgbatten import libpq
from pgbatten.bench.server import BenchOptions, BenchReport, Progress, run_bench
from pgbatten.cluster.discover import Cluster
from pgbatten.errors import ClusterError
from pgbatten.pki import CertificateAuthority
from pgbatten.secure.hosts import gather_machine_names, probe_addresses
from pgbatten.secure.plan import ClientAuth
from pgbatten.secure.verify import probe_role


def bench_cluster(
    cluster: Cluster,
    options: BenchOptions,
    *,
    ca: CertificateAuthority | None = None,
    ca_path: Path | None = None,
    client_auth: ClientAuth = "none",
    progress: Progress | None = None,
) -> BenchReport:
    """Measure every way of connecting to ``cluster``; with ``ca_path``, TLS ways use ``verify-full``.

    ``ca`` signs the role's client certificate when ``client_auth`` asks for one (without a CA the role
    logs in with its password alone).
    """
    running = cluster.require_running()
    sql = cluster.sql()
    rows = sql.query("SHOW listen_addresses")
    listen = str(rows[0][0]) if rows and rows[0][0] is not None else ""
    addresses = probe_addresses(listen, gather_machine_names(listen))
    if not addresses:
        raise ClusterError(f"listen_addresses is {listen!r}: the server takes no TCP connection to measure")
    address = addresses[0]
    # probe_role signs a client certificate only when client_auth asks for one; without a CA it never does.
    authority = ca if ca is not None else CertificateAuthority.create()
    with probe_role(sql, authority, client_auth if ca is not None else "none") as (role, password, cert_dir):
        params = libpq.params(
            host=address,
            hostaddr=address,
            port=running.port,
            user=role,
            password=password,
            sslmode="verify-full" if ca_path is not None else "require",
            sslrootcert=ca_path,
            client_certificate=(
                libpq.ClientCertificate(cert_dir / "client.crt", cert_dir / "client.key")
                if cert_dir is not None
                else None
            ),
            connect_timeout=options.connect_timeout,
            application_name="pgbatten-bench",
        )
        return run_bench(params, options, progress=progress)
