"""What a cluster does with this CA's certificates, read from its configuration files.

Which server certificate it serves (``ssl_cert_file``), where it listens (the running port, else the
configured one), and whether it would use a client certificate at all: PostgreSQL asks for one only when
``ssl_ca_file`` is set, accepts ours only when that file holds our CA, and logs a user in by it only through
a pg_hba.conf rule with ``cert`` or ``clientcert=verify-ca|verify-full``. ``cert client`` warns from these
facts, ``cert revoke`` refuses to revoke the served certificate by accident, and the inventory learns
where its server certificates are installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import host_names
from pgbatten.cluster.discover import Cluster
from pgbatten.errors import PgBattenError
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pgconf.guc_values import parse_bool
from pgbatten.pki.names import classify_host
from pgbatten.pki.records import ClusterRef, Installation, InventoryEntry
from pgbatten.pki.store import CAStore

__all__ = [
    "ClusterView",
    "cluster_view",
    "inspect_cluster",
    "learn_installation",
    "remember_served",
    "served_certificates",
    "still_installed",
]

# PostgreSQL's defaults when postgresql.conf says nothing.
_DEFAULT_PORT = 5432
_DEFAULT_CERT_FILE = "server.crt"
# clientcert values that make the server verify a presented certificate ("1" before PostgreSQL 14).
_CLIENTCERT_CHECKS = frozenset({"verify-ca", "verify-full", "1"})


@dataclass(frozen=True)
class CertRule:
    """A pg_hba.conf rule that logs users in by (or also by) their client certificate."""

    lineno: int
    users: tuple[str, ...]
    method: str

    def may_match(self, user: str) -> bool:
        """Whether the rule can apply to ``user`` (``+group`` and ``@file`` cannot be decided from files)."""
        for token in self.users:
            name = hba_mod.token_value(token)
            if token in ("all",) or token.startswith(("+", "@")) or name == user:
                return True
        return False


@dataclass(frozen=True)
class ClusterView:
    """The facts about one cluster that certificate operations act on."""

    label: str
    ref: ClusterRef
    port: int
    ssl: bool
    cert_file: Path
    served: x509.Certificate | None
    ca_file: Path | None
    trusts_ca: bool
    cert_rules: tuple[CertRule, ...]
    major: int | None = None
    """The server's PostgreSQL major: 17 and later take direct SSL (``sslnegotiation=direct``)."""

    @property
    def served_serial(self) -> int | None:
        return self.served.serial_number if self.served is not None else None

    def server_host(self) -> str | None:
        """The name clients should verify: the served certificate's first DNS name, else its first address."""
        if self.served is None:
            return None
        names = host_names(self.served)
        dns = [n for n in names if isinstance(classify_host(n), str)]
        return dns[0] if dns else (names[0] if names else None)

    def names(self, host: str) -> bool:
        """Whether the served certificate has ``host`` among its subjectAltNames."""
        if self.served is None:
            return False
        try:
            wanted = str(classify_host(host))
        except PgBattenError:
            return False
        return wanted in {str(classify_host(n)) for n in host_names(self.served)}

    def client_certificate_warnings(self, user: str) -> list[str]:
        """Why this server would not use a client certificate for ``user`` (empty when it would)."""
        if not self.ssl:
            return [f"{self.label} does not use TLS (ssl is off), so it never sees a client certificate"]
        if self.ca_file is None:
            return [
                f"{self.label} does not ask for client certificates (ssl_ca_file is not set), so it will not "
                "use this one; require them with: pgbatten secure --client-auth cert (or verify-full)"
            ]
        warnings = []
        if not self.trusts_ca:
            warnings.append(
                f"{self.label} verifies client certificates against {self.ca_file}, which does not hold this "
                "CA: it will refuse this certificate"
            )
        if not any(rule.may_match(user) for rule in self.cert_rules):
            warnings.append(
                f"no pg_hba.conf rule of {self.label} logs {user!r} in by certificate (method cert or "
                "clientcert=verify-full): the server will not use it for the login"
            )
        return warnings


def inspect_cluster(cluster: Cluster, ca_certificate: x509.Certificate | None) -> ClusterView:
    """Read ``cluster``'s files; ``ParseError``/``FileProblem`` (one line) when they cannot be read."""
    files = conf_mod.load_conf_tree(cluster.config_file)
    if cluster.auto_conf_file.exists():
        files.append(conf_mod.load_conf(cluster.auto_conf_file))
    settings = conf_mod.effective_settings(files)

    def value(name: str) -> str | None:
        found = settings.get(name)
        return found.value if found is not None else None

    if cluster.running is not None:
        port = cluster.running.port
    else:
        configured = value("port")
        port = int(configured) if configured and configured.isdigit() else _DEFAULT_PORT
    cert_file = _in_data_dir(cluster, value("ssl_cert_file") or _DEFAULT_CERT_FILE)
    ca_setting = value("ssl_ca_file")
    ca_file = _in_data_dir(cluster, ca_setting) if ca_setting else None
    return ClusterView(
        label=cluster.label,
        ref=ClusterRef.of(cluster.label, cluster.data_dir),
        port=port,
        ssl=parse_bool(value("ssl") or "off") is True,
        cert_file=cert_file,
        served=_first_certificate(cert_file),
        ca_file=ca_file,
        trusts_ca=ca_file is not None and ca_certificate is not None and _holds(ca_file, ca_certificate),
        cert_rules=_cert_rules(cluster.hba_file, cluster.major),
        major=cluster.major,
    )


def learn_installation(store: CAStore, view: ClusterView) -> None:
    """Record in the inventory that ``view``'s cluster serves one of this CA's server certificates."""
    serial = view.served_serial
    if serial is None:
        return
    for entry in store.find(f"{serial:#x}"):
        wanted = Installation(view.cert_file, view.ref)
        if entry.kind == "server" and entry.serial == serial and entry.installed != wanted:
            store.set_installed(serial, wanted)


def still_installed(entry: InventoryEntry) -> bool:
    """Whether the file the inventory says ``entry`` was installed in still holds that certificate."""
    if entry.installed is None:
        return False
    found = _first_certificate(entry.installed.cert_file)
    return found is not None and found.serial_number == entry.serial


def served_certificates(store: CAStore, view: ClusterView | None = None) -> dict[int, str]:
    """Serials of this CA's certificates that clusters serve, each with where: ``view``'s own, and every
    server certificate still in the file the inventory says it was installed in."""
    served: dict[int, str] = {}
    for entry in store.inventory.installed_servers():
        if entry.installed is not None and still_installed(entry):
            cluster = entry.installed.cluster
            where = f"cluster {cluster.value}" if cluster is not None else "a cluster"
            served[entry.serial] = f"{where} ({entry.installed.cert_file})"
    if view is not None and view.served_serial is not None:
        served[view.served_serial] = f"cluster {view.label} ({view.cert_file})"
    return served


def _in_data_dir(cluster: Cluster, value: str) -> Path:
    # PostgreSQL resolves relative file settings against the data directory.
    path = Path(value)
    return path if path.is_absolute() else cluster.data_dir / path


def _first_certificate(path: Path) -> x509.Certificate | None:
    try:
        found = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return found[0] if found else None


def _holds(path: Path, certificate: x509.Certificate) -> bool:
    try:
        return certificate in x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return False


def _cert_rules(hba_file: Path, major: int | None) -> tuple[CertRule, ...]:
    rules = []
    # Read as the cluster's own major reads it (continuations, includes and options differ by version).
    for rule in hba_mod.load_hba(hba_file, major=major).rules:
        if not rule.is_tcp or rule.conn_type in (hba_mod.ConnType.HOSTNOSSL, hba_mod.ConnType.HOSTGSSENC):
            continue
        if rule.method == "cert" or (rule.option("clientcert") or "") in _CLIENTCERT_CHECKS:
            rules.append(CertRule(rule.lineno, rule.users, rule.method))
    return tuple(rules)


def cluster_view(cluster: Cluster | None, store: CAStore) -> ClusterView | None:
    """What ``cluster`` does with this CA's certificates (read only: a refusal must change nothing)."""
    if cluster is None:
        return None
    try:
        ca_cert: x509.Certificate | None = x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes())
    except (OSError, ValueError):
        ca_cert = None  # load() reports a broken CA when the key is needed
    return inspect_cluster(cluster, ca_cert)


def remember_served(store: CAStore, view: ClusterView | None) -> None:
    """After a command succeeded: remember which of this CA's server certificates the cluster serves."""
    if view is not None:
        learn_installation(store, view)
