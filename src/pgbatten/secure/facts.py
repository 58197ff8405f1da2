"""Reading what ``secure`` needs to know about a cluster (I/O), for the pure planner."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgbatten.cluster.discover import Cluster
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import PgBattenError
from pgbatten.fsutil import read_bytes_or_none
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import pg_ident
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.secure.hosts import MachineNames, gather_machine_names
from pgbatten.secure.lockout import LoginRole, parse_user_file
from pgbatten.secure.plan import CA_NAME, CERT_NAME, CRL_NAME, KEY_NAME, ClusterState

PROBE_ROLE_PATTERN = "^pgbatten_verify_[0-9a-f]{8}$"
OWNED_SETTINGS = (
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_min_protocol_version",
    "ssl_ciphers",
    "ssl_ecdh_curve",
    "ssl_groups",
    "password_encryption",
)
"""Every setting ``secure.settings.tls_settings`` may write (a name this version lacks is simply absent)."""
"""The throwaway login roles of ``verify.probe_role``: a run killed mid-proof leaves one behind."""

# Field separator for the role lists of the membership query; role names cannot hold it in practice.
_SEP = "\x1e"


@dataclass(frozen=True)
class ServerFacts:
    """What the running server says, in one round trip: what files cannot tell."""

    listen_addresses: str
    role: str
    """The role the owner's socket login maps to: the cluster's superuser, for the client instructions."""
    conf_load_time: float
    """``pg_conf_load_time()`` as a Unix time: files changed later are not in effect yet."""
    leftover_roles: tuple[str, ...]
    settings: Mapping[str, str | None] = field(default_factory=dict)
    """``pg_settings`` values of the settings ``secure`` may own (``OWNED_SETTINGS``)."""


def read_server(cluster: Cluster) -> ServerFacts | None:
    """The running server's facts, None for a stopped cluster (or one without a socket)."""
    if cluster.running is None or cluster.running.socket_dir is None:
        return None
    rows = cluster.sql().query(
        "SELECT 'listen', current_setting('listen_addresses')"
        " UNION ALL SELECT 'role', current_user::text"
        " UNION ALL SELECT 'loaded', extract(epoch FROM pg_conf_load_time())::text"
        " UNION ALL SELECT 'leftover', rolname::text FROM pg_roles WHERE rolname ~ :'pattern'"
        " UNION ALL SELECT 'setting:' || name, setting FROM pg_settings"
        " WHERE name = ANY (string_to_array(:'owned', ','))",
        {"pattern": PROBE_ROLE_PATTERN, "owned": ",".join(OWNED_SETTINGS)},
    )
    values = {str(row[0]): row[1] or "" for row in rows if row[0] != "leftover"}
    settings = {str(r[0]).removeprefix("setting:"): r[1] for r in rows if str(r[0]).startswith("setting:")}
    return ServerFacts(
        listen_addresses=values.get("listen", ""),
        role=values.get("role", cluster.owner.name),
        conf_load_time=float(values.get("loaded") or 0),
        leftover_roles=tuple(str(row[1]) for row in rows if row[0] == "leftover" and row[1]),
        settings=settings,
    )


def read_state(
    cluster: Cluster, *, machine: MachineNames | None = None, server: ServerFacts | None = None
) -> ClusterState:
    """Parse the cluster's configuration files and read the files ``secure`` may replace.

    An unparseable postgresql.conf or pg_hba.conf stops here with file, line and reason, before any plan
    exists, so nothing can be written. ``server`` saves the round trip asking for ``listen_addresses``.
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
    listen = _listen_addresses(cluster, conf_files, server)
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
        served=_served_elsewhere(cluster, conf_files, cert_dir / CERT_NAME),
    )


def _served_elsewhere(
    cluster: Cluster, conf_files: list[conf_mod.ConfFile], ours: Path
) -> tuple[Path, bytes] | None:
    """The file ssl_cert_file names, when ssl is on and it is not pgbatten's (unreadable: None)."""
    from pgbatten.pgconf.guc_values import parse_bool

    effective = conf_mod.effective_settings(conf_files)
    ssl, cert = effective.get("ssl"), effective.get("ssl_cert_file")
    if ssl is None or parse_bool(ssl.value) is not True:
        return None
    path = Path(cert.value if cert is not None and cert.value else "server.crt")
    if not path.is_absolute():
        path = cluster.data_dir / path
    if path == ours:
        return None
    try:
        data = read_bytes_or_none(path)
    except PgBattenError:
        return None
    return (path, data) if data is not None else None


def _listen_addresses(
    cluster: Cluster, conf_files: list[conf_mod.ConfFile], server: ServerFacts | None
) -> str:
    if server is not None:
        return server.listen_addresses
    if cluster.running is not None and cluster.running.socket_dir is not None:
        value = cluster.sql().value("SELECT current_setting('listen_addresses')")
        if value is not None:
            return value
    source = conf_mod.effective_settings(conf_files).get("listen_addresses")
    return source.value if source is not None else "localhost"


def config_paths(cluster: Cluster, state: ClusterState) -> list[Path]:
    """Every file whose content the server loads on reload and ``secure`` manages."""
    paths = [f.path for f in state.conf_files if f.path is not None]
    paths.append(cluster.hba_file)
    if state.ident is not None and state.ident.path is not None:
        paths.append(state.ident.path)
    paths.extend(state.existing)
    return paths


def changed_since(paths: Iterable[Path], when: float) -> list[Path]:
    """The files modified after ``when`` (a Unix time): on disk, but not what the server loaded."""
    newer = []
    for path in paths:
        with contextlib.suppress(OSError):
            if path.stat().st_mtime > when:
                newer.append(path)
    return newer


def read_login_roles(sql: OwnerSQL, groups: Sequence[str]) -> list[LoginRole]:
    """Every role that may log in, with its (direct or indirect) membership of the ``+groups`` named."""
    rows = sql.query(
        "SELECT r.rolname::text, coalesce(("
        "  SELECT string_agg(g.rolname::text, :'sep') FROM pg_roles g"
        "  WHERE g.rolname = ANY (string_to_array(:'groups', :'sep')) AND pg_has_role(r.oid, g.oid, 'MEMBER')"
        " ), '') FROM pg_roles r WHERE r.rolcanlogin ORDER BY 1",
        {"groups": _SEP.join(groups), "sep": _SEP},
    )
    return [
        LoginRole(str(name), frozenset(g for g in (member or "").split(_SEP) if g)) for name, member in rows
    ]


def read_user_files(hba_path: Path, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The role names in each ``@file`` of pg_hba.conf (relative to its directory)."""
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        path = Path(name) if Path(name).is_absolute() else hba_path.parent / name
        data = read_bytes_or_none(path)
        out[name] = parse_user_file(data.decode("utf-8", "replace")) if data is not None else ()
    return out


def drop_roles(sql: OwnerSQL, roles: Iterable[str]) -> None:
    """Drop the throwaway roles a killed run left behind (only names of our own pattern)."""
    names = [r for r in roles if r.startswith("pgbatten_verify_")]
    if names:
        sql.query(
            "SELECT format('DROP ROLE IF EXISTS %I', rolname) FROM pg_roles"
            " WHERE rolname ~ :'pattern' AND rolname = ANY (string_to_array(:'names', ',')) \\gexec",
            {"pattern": PROBE_ROLE_PATTERN, "names": ",".join(names)},
        )
