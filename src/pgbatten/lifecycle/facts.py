"""What the lifecycle needs to know, read once (I/O): the CA directory and each cluster as it runs.

Nothing here judges; :mod:`pgbatten.lifecycle.status` turns these facts into levels and next steps with a
``now`` of its own. Reading is gentle: one SQL round trip as the owner over the socket and one TLS
handshake per cluster (the served certificate), no CA key, no passphrase.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from pgbatten.certfacts import fingerprint_sha256, load_der_chain
from pgbatten.cluster.discover import Cluster
from pgbatten.errors import PgBattenError
from pgbatten.fsutil import read_bytes_or_none
from pgbatten.netutil import is_ip_address
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pgconf.guc_values import parse_bool
from pgbatten.pki import CAStore, ClusterRef, InventoryEntry
from pgbatten.pki.overlap import retired_roots
from pgbatten.secure.hosts import MachineNames, probe_addresses, resolve_like_postgres, split_listen_addresses
from pgbatten.secure.plan import CERT_NAME

SSL_SETTINGS = (
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "listen_addresses",
    "port",
)
_PATH_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir")
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


@dataclass(frozen=True)
class CAFacts:
    """The CA directory as found: root certificate, inventory and CRL (any of them may be missing)."""

    path: Path
    certificate: x509.Certificate | None
    entries: tuple[InventoryEntry, ...] = ()
    crl: x509.CertificateRevocationList | None = None
    crl_size: int | None = None
    error: str | None = None
    retired: tuple[x509.Certificate, ...] = ()
    """Roots of CAs retired after a rotation (kept in ``retired/``)."""


@dataclass(frozen=True)
class RotationFacts:
    """A CA rotation in progress: the retiring CA, the cross certificate, and the overlap's dates."""

    previous: CAFacts
    cross: x509.Certificate | None
    started_at: str
    planned_end: str


@dataclass(frozen=True)
class Served:
    """What one TLS handshake with the server showed: the chain it sent, or why there was none."""

    address: str
    port: int
    chain: tuple[x509.Certificate, ...] = ()
    error: str | None = None

    @property
    def leaf_fingerprint(self) -> str | None:
        return fingerprint_sha256(self.chain[0]) if self.chain else None


@dataclass(frozen=True)
class ClusterFacts:
    """One cluster: the TLS settings in effect and the files they name, and what the server serves."""

    ref: ClusterRef
    label: str
    running: bool = False
    pid: int | None = None
    port: int | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    cert_path: Path | None = None
    chain: tuple[x509.Certificate, ...] = ()
    cert_error: str | None = None
    ca_file_path: Path | None = None
    ca_file: tuple[x509.Certificate, ...] = ()
    ca_file_error: str | None = None
    crl_file_path: Path | None = None
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    crl_file_size: int | None = None
    crl_file_error: str | None = None
    served: Served | None = None
    error: str | None = None

    @property
    def ssl_on(self) -> bool:
        return parse_bool(self.settings.get("ssl", "off")) is True

    @property
    def managed(self) -> bool:
        """Whether the server certificate file is pgbatten's own (the one ``secure`` installs)."""
        return self.cert_path is not None and self.cert_path.name == CERT_NAME


def read_ca(path: Path) -> CAFacts:
    """The CA directory's public parts; a missing or unreadable CA is a fact, not an exception."""
    store = CAStore(path)
    if not store.ca_cert_path.exists():
        return CAFacts(path=path, certificate=None, error=f"no CA in {path}")
    try:
        certificate = x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes())
        entries = tuple(store.entries())
        crl = store.load_crl()
        size = len(store.crl_path.read_bytes()) if crl is not None else None
    except (PgBattenError, OSError, ValueError) as exc:
        return CAFacts(path=path, certificate=None, error=_one_line(exc))
    return CAFacts(
        path=path,
        certificate=certificate,
        entries=entries,
        crl=crl,
        crl_size=size,
        retired=retired_roots(path),
    )


def read_cluster(ref: ClusterRef, *, timeout: float = 5.0) -> ClusterFacts:
    """Discover the cluster and read its TLS state; a cluster that cannot be read is a fact with an error."""
    label = ref.value
    try:
        cluster = ref.discover()
    except PgBattenError as exc:
        return ClusterFacts(ref=ref, label=label, error=_one_line(exc))
    label = cluster.label
    try:
        settings = _settings(cluster)
    except PgBattenError as exc:
        return ClusterFacts(ref=ref, label=label, running=cluster.running is not None, error=_one_line(exc))
    running = cluster.running
    facts = ClusterFacts(
        ref=ref,
        label=label,
        running=running is not None,
        pid=running.pid if running else None,
        port=running.port if running else _int(settings.get("port")),
        settings=settings,
    )
    paths = {name: _resolve(cluster, settings.get(name, "")) for name in _PATH_SETTINGS}
    chain, cert_error = _read_certificates(paths["ssl_cert_file"]) if facts.ssl_on else ((), None)
    ca_file, ca_error = _read_certificates(paths["ssl_ca_file"])
    crls, crl_size, crl_error = _read_crls(paths["ssl_crl_file"])
    served = None
    if running is not None and facts.ssl_on:
        served = ask_server(settings.get("listen_addresses", ""), running.port, timeout=timeout)
    return ClusterFacts(
        ref=ref,
        label=label,
        running=facts.running,
        pid=facts.pid,
        port=facts.port,
        settings=settings,
        cert_path=paths["ssl_cert_file"],
        chain=chain,
        cert_error=cert_error,
        ca_file_path=paths["ssl_ca_file"],
        ca_file=ca_file,
        ca_file_error=ca_error,
        crl_file_path=paths["ssl_crl_file"],
        crls=crls,
        crl_file_size=crl_size,
        crl_file_error=crl_error,
        served=served,
    )


def _settings(cluster: Cluster) -> dict[str, str]:
    """The settings in effect: from the server when it runs (one round trip), else from its files."""
    if cluster.running is not None and cluster.running.socket_dir is not None:
        rows = cluster.sql().query(
            "SELECT name, setting FROM pg_settings WHERE name = ANY (string_to_array(:'names', ','))",
            {"names": ",".join(SSL_SETTINGS)},
        )
        return {str(name): value or "" for name, value in rows}
    files = conf_mod.load_conf_tree(cluster.config_file)
    if cluster.auto_conf_file.exists():
        files.append(conf_mod.load_conf(cluster.auto_conf_file))
    effective = conf_mod.effective_settings(files)
    out = {name: source.value for name, source in effective.items() if name in SSL_SETTINGS}
    out.setdefault("ssl", "off")
    out.setdefault("listen_addresses", "localhost")
    return out


def _resolve(cluster: Cluster, value: str) -> Path | None:
    # PostgreSQL reads relative paths from the data directory.
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else cluster.data_dir / path


def _read_certificates(path: Path | None) -> tuple[tuple[x509.Certificate, ...], str | None]:
    if path is None:
        return (), None
    try:
        data = read_bytes_or_none(path)
    except PgBattenError as exc:
        return (), _one_line(exc)
    if data is None:
        return (), f"{path} does not exist"
    try:
        return tuple(x509.load_pem_x509_certificates(data)), None
    except ValueError as exc:
        return (), f"{path} is not a PEM certificate file: {_one_line(exc)}"


def split_crls(data: bytes) -> tuple[x509.CertificateRevocationList, ...]:
    """Every CRL of a PEM file (PostgreSQL's ``ssl_crl_file`` may hold one per CA); ``ValueError`` if bad."""
    blocks = _CRL_BLOCK.findall(data)
    if not blocks:
        raise ValueError("no PEM CRL in the file")
    return tuple(x509.load_pem_x509_crl(block) for block in blocks)


def _read_crls(
    path: Path | None,
) -> tuple[tuple[x509.CertificateRevocationList, ...], int | None, str | None]:
    if path is None:
        return (), None, None
    try:
        data = read_bytes_or_none(path)
    except PgBattenError as exc:
        return (), None, _one_line(exc)
    if data is None:
        return (), None, f"{path} does not exist"
    try:
        return split_crls(data), len(data), None
    except ValueError as exc:
        return (), len(data), f"{path} is not a PEM CRL file: {_one_line(exc)}"


def first_address(listen_addresses: str) -> str | None:
    """One address the server listens on, as PostgreSQL binds it (loopback for a wildcard), or None."""
    listen = split_listen_addresses(listen_addresses)
    resolved = {
        item: resolve_like_postgres(item)
        for item in listen
        if item not in ("*", "0.0.0.0", "::") and not is_ip_address(item)  # noqa: S104 - read, not bound
    }
    machine = MachineNames(hostnames=(), addresses=(), ipv6_loopback=True, resolved=resolved)
    found = probe_addresses(listen_addresses, machine)
    # Prefer IPv4 loopback where it is one of them: always there when the server listens on localhost.
    return "127.0.0.1" if "127.0.0.1" in found else (found[0] if found else None)


def ask_server(listen_addresses: str, port: int, *, timeout: float) -> Served:
    """One TLS handshake (one backend forked, no login): the chain the server really serves."""
    from pgbatten.probe.tls import first_handshake

    address = first_address(listen_addresses)
    if address is None:
        return Served(address="", port=port, error="listen_addresses has no TCP address to ask")
    scan = first_handshake(address, port, timeout=timeout)
    if scan.best is None:
        reason = scan.unreachable or scan.stalled or "no TLS handshake completed"
        if scan.ssl_response is not None and scan.unreachable is None and scan.stalled is None:
            reason = f"the server answered SSLRequest with {scan.ssl_response.answer}"
        return Served(address=address, port=port, error=reason)
    chain, problem = load_der_chain(scan.best.chain)
    return Served(address=address, port=port, chain=tuple(chain), error=problem)


def read_all(
    ca_dir: Path, refs: Sequence[ClusterRef], *, timeout: float = 5.0
) -> tuple[CAFacts, tuple[ClusterFacts, ...]]:
    """The CA and every cluster named, in the order given."""
    return read_ca(ca_dir), tuple(read_cluster(ref, timeout=timeout) for ref in refs)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
