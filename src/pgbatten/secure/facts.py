"""Reading what ``secure`` needs to know about a cluster (I/O), for the pure planner."""

from __future__ import annotations

from pathlib import Path

from pgbatten.cluster.discover import Cluster
from pgbatten.fsutil import read_bytes_or_none
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import pg_ident
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.secure.hosts import MachineNames, gather_machine_names
from pgbatten.secure.plan import CA_NAME, CERT_NAME, CRL_NAME, KEY_NAME, ClusterState


def read_state(
    cluster: Cluster, *, crl: bytes | None = None, machine: MachineNames | None = None
) -> ClusterState:
    """Parse the cluster's configuration files and read the files ``secure`` may replace.

    An unparseable postgresql.conf or pg_hba.conf stops here with file, line and reason, before any plan
    exists, so nothing can be written.
    """
    conf_files = conf_mod.load_conf_tree(cluster.config_file)
    if cluster.auto_conf_file.exists():
        # PostgreSQL reads postgresql.auto.conf last: ALTER SYSTEM values beat every file we edit.
        conf_files.append(conf_mod.load_conf(cluster.auto_conf_file))
    # Read as this major version reads them (continuations from 14, include directives from 16).
    hba = hba_mod.load_hba(cluster.hba_file, major=cluster.major)
    ident = (
        pg_ident.load_ident(cluster.ident_file, major=cluster.major) if cluster.ident_file.exists() else None
    )
    listen = _listen_addresses(cluster, conf_files)
    cert_dir = cluster.config_file.parent
    existing: dict[Path, bytes] = {}
    for name in (CERT_NAME, KEY_NAME, CA_NAME, CRL_NAME):
        content = read_bytes_or_none(cert_dir / name)
        if content is not None:
            existing[cert_dir / name] = content
    return ClusterState(
        major=cluster.major,
        cert_dir=cert_dir,
        conf_files=tuple(conf_files),
        hba=hba,
        ident=ident,
        listen_addresses=listen,
        machine=machine or gather_machine_names(listen),
        existing=existing,
        crl=crl,
    )


def _listen_addresses(cluster: Cluster, conf_files: list[conf_mod.ConfFile]) -> str:
    if cluster.running is not None and cluster.running.socket_dir is not None:
        value = cluster.sql().value("SELECT current_setting('listen_addresses')")
        if value is not None:
            return value
    source = conf_mod.effective_settings(conf_files).get("listen_addresses")
    return source.value if source is not None else "localhost"
