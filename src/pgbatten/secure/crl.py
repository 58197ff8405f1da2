"""Installing the CA's CRL on a running cluster, and proving from outside that it is in force.

The same path as ``secure``: a pure plan (the CRL file beside postgresql.conf, ``ssl_crl_file`` set on the
line PostgreSQL obeys), then ``apply_plan``'s backups, atomic writes, validation by PostgreSQL, a reload
(never a restart) and proofs, with every file restored if a proof fails.

The proof needs a client certificate with a revoked serial, but the CA never keeps users' private keys. So
it mints a throwaway certificate carrying the *same serial* as the revoked one: PostgreSQL (OpenSSL) looks
a certificate up in the CRL by issuer and serial, so the server refuses the stand-in exactly when the CRL
it has loaded revokes that serial. The stand-in lives for minutes, in memory and a private temp dir, is
recorded nowhere, and is itself revoked by construction. A second, unrevoked throwaway certificate shows
that every other certificate still gets through the handshake.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg
from cryptography import x509

from pgbatten import libpq
from pgbatten.cluster.discover import Cluster
from pgbatten.errors import ClusterError, FileProblem
from pgbatten.fsutil import atomic_write, directory_lock, read_bytes_or_none
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pgconf.guc_values import parse_bool
from pgbatten.pki import CAStore, CertificateAuthority, ClusterRef, IssuedCertificate
from pgbatten.secure.apply import ApplyResult, apply_plan
from pgbatten.secure.facts import read_state
from pgbatten.secure.hosts import probe_addresses
from pgbatten.secure.plan import CRL_NAME, ClusterState, FileChange, conf_changes
from pgbatten.secure.request import DEFAULT_LOCK_WAIT
from pgbatten.secure.verify import Proof

__all__ = [
    "CrlPlan",
    "check_installable",
    "classify",
    "install_crl",
    "plan_crl_install",
    "preflight",
    "prove_revocation",
    "read_ca_file",
    "stand_in",
    "try_certificate",
]

Log = Callable[[str], None]
Outcome = Literal["accepted", "revoked", "refused"]

PROBE_CN = "pgbatten-revocation-probe"
PROBE_LIFETIME = dt.timedelta(minutes=30)
# Proving costs one connection per serial; a user with many certificates is proved on the newest few.
MAX_SERIALS_PROVED = 5


@dataclass(frozen=True)
class CrlPlan:
    """The files and settings that put the CRL in force; fits ``apply_plan`` like a ``SecurePlan``."""

    changes: tuple[FileChange, ...]
    settings: Mapping[str, str]
    crl_path: Path
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def crl_path_for(state: ClusterState) -> Path:
    """Where pgbatten keeps a cluster's CRL: beside postgresql.conf, where ``secure`` puts it too."""
    return state.cert_dir / CRL_NAME


def check_installable(state: ClusterState, ca: CertificateAuthority, ca_file: bytes | None) -> None:
    """``ClusterError`` unless this cluster verifies client certificates against our CA with our CRL slot.

    A CRL on a server that does not check client certificates against the pgbatten CA would protect
    nothing while looking as if it did, and replacing a CRL someone else manages could re-admit
    certificates their CA revoked.
    """
    effective = conf_mod.effective_settings(state.conf_files)
    ssl = effective.get("ssl")
    if ssl is None or parse_bool(ssl.value) is not True:
        raise ClusterError("ssl is off on this cluster; run 'pgbatten secure' before installing a CRL")
    ca_setting = effective.get("ssl_ca_file")
    if ca_setting is None or not ca_setting.value:
        raise ClusterError(
            "the cluster does not verify client certificates (ssl_ca_file is not set); run "
            "'pgbatten secure --client-auth cert' (or verify-full) first"
        )
    if ca_file is None or not _contains(ca_file, ca.certificate):
        raise ClusterError(
            f"ssl_ca_file {ca_setting.value} does not hold the pgbatten CA certificate, so this CRL "
            "would not apply to the client certificates it accepts; run 'pgbatten secure' with this CA first"
        )
    wanted = crl_path_for(state)
    crl_setting = effective.get("ssl_crl_file")
    if crl_setting is not None and crl_setting.value and crl_setting.value != str(wanted):
        where = f"{crl_setting.path}:{crl_setting.lineno}"
        raise ClusterError(
            f"ssl_crl_file is already {crl_setting.value!r} ({where}), not pgbatten's {wanted}; "
            "pgbatten will not replace a CRL it does not manage"
        )


def plan_crl_install(
    state: ClusterState, ca: CertificateAuthority, ca_file: bytes | None, crl: bytes
) -> CrlPlan:
    """The CRL file and the ``ssl_crl_file`` setting, or nothing when both are already in place. Pure."""
    check_installable(state, ca, ca_file)
    path = crl_path_for(state)
    changes: list[FileChange] = []
    old = state.existing.get(path)
    if old != crl:
        changes.append(FileChange(path, old, crl, 0o644, purpose="CRL"))
    settings = {"ssl_crl_file": str(path)}
    edits, notes = conf_changes(state.conf_files, settings)
    changes.extend(edits)
    return CrlPlan(changes=tuple(changes), settings=settings, crl_path=path, notes=tuple(notes))


def _contains(pem_bundle: bytes, certificate: x509.Certificate) -> bool:
    try:
        found = x509.load_pem_x509_certificates(pem_bundle)
    except ValueError:
        return False
    return certificate in found


# -- I/O ------------------------------------------------------------------------------------------------


def read_ca_file(cluster: Cluster, state: ClusterState) -> bytes | None:
    """The bytes of the file ``ssl_ca_file`` names (relative paths are relative to PGDATA), or None."""
    setting = conf_mod.effective_settings(state.conf_files).get("ssl_ca_file")
    if setting is None or not setting.value:
        return None
    path = Path(setting.value)
    if not path.is_absolute():
        path = cluster.data_dir / path
    return read_bytes_or_none(path)


def preflight(cluster: Cluster, ca: CertificateAuthority) -> None:
    """Refuse early (before the CA inventory changes) when the CRL could not be installed on ``cluster``."""
    cluster.require_running()
    state = read_state(cluster)
    check_installable(state, ca, read_ca_file(cluster, state))


def install_crl(
    cluster: Cluster,
    store: CAStore,
    ca: CertificateAuthority,
    *,
    refuse: Sequence[int],
    log: Log,
    timeout: float = 5.0,
    lock_wait: float = DEFAULT_LOCK_WAIT,
) -> tuple[CrlPlan, ApplyResult]:
    """Install ``store``'s CRL on ``cluster`` by reload and prove every serial in ``refuse`` is refused.

    The cluster is locked from reading its files to the last proof, as ``secure`` locks it: neither run can
    write a configuration computed before the other changed it. Once installed, the CA's inventory
    remembers the cluster, so that ``crl refresh`` hints name it.
    """
    cluster.require_running()
    with directory_lock(cluster.data_dir, wait=lock_wait, what=f"cluster {cluster.label}"):
        plan, outcome = _install_locked(cluster, store, ca, refuse=refuse, log=log, timeout=timeout)
        store.note_crl_install(ClusterRef.of(cluster.label, cluster.data_dir), plan.crl_path)
    return plan, outcome


def _install_locked(
    cluster: Cluster,
    store: CAStore,
    ca: CertificateAuthority,
    *,
    refuse: Sequence[int],
    log: Log,
    timeout: float,
) -> tuple[CrlPlan, ApplyResult]:
    try:
        crl = store.crl_path.read_bytes()
    except OSError as exc:
        raise FileProblem(store.crl_path, exc.strerror or "cannot read") from exc
    state = read_state(cluster)
    plan = plan_crl_install(state, ca, read_ca_file(cluster, state), crl)
    for note in plan.notes:
        log(f"note: {note}")
    addresses = probe_addresses(state.listen_addresses, state.machine)
    if not addresses:
        raise ClusterError("the cluster listens on no TCP address, so revocation cannot be proved")
    port = cluster.require_running().port

    def prove() -> list[Proof]:
        return prove_revocation(
            ca,
            ca_path=store.ca_cert_path,
            hostaddr=addresses[0],
            port=port,
            serials=list(refuse)[-MAX_SERIALS_PROVED:],
            timeout=timeout,
        )

    return plan, apply_plan(cluster, plan, prove=prove, log=log)


# -- proofs ---------------------------------------------------------------------------------------------


def stand_in(ca: CertificateAuthority, serial: int, now: dt.datetime | None = None) -> IssuedCertificate:
    """A short-lived client certificate with ``serial``: refused exactly where that serial is revoked."""
    return ca.issue_stand_in(serial, common_name=PROBE_CN, lifetime=PROBE_LIFETIME, now=now)


def try_certificate(
    issued: IssuedCertificate, *, user: str, hostaddr: str, port: int, ca_path: Path, timeout: float
) -> tuple[Outcome, str]:
    """Present ``issued`` to the server over TLS with libpq: did the handshake accept or revoke it?"""
    with tempfile.TemporaryDirectory(prefix="pgbatten-crl-") as tmp:
        cert_path, key_path = Path(tmp) / "client.crt", Path(tmp) / "client.key"
        atomic_write(cert_path, issued.cert_pem(), mode=0o644)
        atomic_write(key_path, issued.key_pem(), mode=0o600)
        try:
            params = libpq.params(
                host=hostaddr,
                port=port,
                user=user,
                # No password: a login is not the point, the handshake is.
                password="",
                # verify-ca: the proof is about the server's view of our certificate; the server's name is
                # proved by secure and check.
                sslmode="verify-ca",
                sslrootcert=ca_path,
                client_certificate=libpq.ClientCertificate(cert_path, key_path),
                connect_timeout=timeout,
                application_name="pgbatten-crl-proof",
            )
            with libpq.connect(params):
                return "accepted", "logged in"
        except psycopg.Error as exc:
            return classify(" ".join(str(exc).split()))


def classify(message: str) -> tuple[Outcome, str]:
    """Sort a libpq connection error into revoked, accepted by the handshake (then refused), or refused."""
    lowered = message.lower()
    if "certificate revoked" in lowered:
        return "revoked", message
    # FATAL comes from a backend, which exists only after the handshake accepted the certificate; "no
    # password supplied" is libpq answering the server's password request, equally after it.
    if "fatal:" in lowered or "no password supplied" in lowered:
        return "accepted", f"handshake accepted; then {message}"
    return "refused", message


def prove_revocation(
    ca: CertificateAuthority,
    *,
    ca_path: Path,
    hostaddr: str,
    port: int,
    serials: Sequence[int],
    timeout: float,
) -> list[Proof]:
    """Each revoked serial is refused as revoked; a certificate that is not revoked is still accepted."""
    proofs: list[Proof] = []
    for serial in serials:
        outcome, detail = try_certificate(
            stand_in(ca, serial),
            user=PROBE_CN,
            hostaddr=hostaddr,
            port=port,
            ca_path=ca_path,
            timeout=timeout,
        )
        proofs.append(Proof(f"serial {serial:#x} refused as revoked", outcome == "revoked", detail))
    fresh = ca.issue_client("pgbatten_crl_probe", days=1)
    outcome, detail = try_certificate(
        fresh, user="pgbatten_crl_probe", hostaddr=hostaddr, port=port, ca_path=ca_path, timeout=timeout
    )
    proofs.append(Proof("a certificate that is not revoked is still accepted", outcome == "accepted", detail))
    return proofs
