"""A cluster with pgbatten's TLS settings for its version, for the bench tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from pgbatten.pgconf.postgresql_conf import quote_value
from pgbatten.pki import CertificateAuthority
from pgbatten.secure.settings import tls_settings

ROLE = "bench"
PASSWORD = "bench-pw"
HBA = "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
TLS_ONLY_HBA = (
    "local all all peer\nhostnossl all all 0.0.0.0/0 reject\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
)


@contextlib.contextmanager
def tls_cluster(
    binaries: PgBinaries, workdir: Path, template: ClusterTemplate | None = None, *, hba: str = HBA
) -> Iterator[TempCluster]:
    """pgbatten's TLS settings for this version, but plaintext still allowed (a ``host`` rule)."""
    ca = CertificateAuthority.create()
    (workdir / "ca.crt").write_bytes(ca.cert_pem())
    issued = ca.issue_server(["localhost", "127.0.0.1"])
    cluster = TempCluster(binaries=binaries, hba=hba, listen_ipv6=False, template=template)
    try:
        cluster.init()
        files = {}
        for name, data, mode in (
            ("server.crt", issued.cert_pem(), 0o644),
            ("server.key", issued.key_pem(), 0o600),
            ("ca.crt", ca.cert_pem(), 0o644),
        ):
            path = cluster.data_dir / name
            path.write_bytes(data)
            os.chmod(path, mode)
            if os.geteuid() == 0:
                os.chown(path, cluster.owner.uid, cluster.owner.gid)
            files[name] = path
        settings = tls_settings(
            major=binaries.major,
            tls_min="1.2",
            cert_file=files["server.crt"],
            key_file=files["server.key"],
            ca_file=files["ca.crt"],
        )
        with cluster.config_file.open("a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {quote_value(value)}\n")
        cluster.start()
        cluster.sql().query(
            "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'r', :'p') \\gexec",
            {"r": ROLE, "p": PASSWORD},
        )
        yield cluster
    finally:
        cluster.cleanup()
