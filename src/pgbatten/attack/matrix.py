"""``pgbatten mitm --matrix``: every attack against every client setting, for each real driver, measured.

A throwaway TLS-only server (as ``pgbatten secure`` leaves one: ``hostssl`` with SCRAM, a ``hostnossl``
reject guard, a certificate from its own CA) and one man in the middle per attack, all on loopback. Each
driver connects once per setting without an attacker (through a plain relay: does the setting work at
all?) and once per attack. A cell's verdict is the man in the middle's account of what the client did
(:class:`mitm_connection.Verdict`), checked against what the client itself reported: a client that got its
rows through the attacker must have been read, and one read must have got its rows.

What libpq's documentation says each sslmode does is the yardstick for "departures": a driver whose
measured behaviour under the plain setting differs from it is listed, since its users were told otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pgbatten.attack.drivers import (
    DRIVERS,
    SSLMODES,
    ClientFiles,
    Driver,
    Endpoint,
    Outcome,
    Setting,
    Variant,
)
from pgbatten.attack.forge import Attack
from pgbatten.attack.mitm import Mitm
from pgbatten.attack.mitm_connection import MitmConnection, MitmOptions, Verdict
from pgbatten.attack.relay import Relay
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from pgbatten.errors import UsageError
from pgbatten.pki import CertificateAuthority
from pgbatten.probe.wire import Target

ROLE, CERT_ROLE = "app", "app_cert"
QUERY = "SELECT 'card 4111 1111 1111 1111'"
EXPECTED_VALUE = "card 4111 1111 1111 1111"

MATRIX_HBA = f"""\
local     all  all                     peer
hostnossl all  all        0.0.0.0/0    reject
hostnossl all  all        ::/0         reject
hostssl   all  {CERT_ROLE}   127.0.0.1/32 scram-sha-256 clientcert=verify-full
hostssl   all  {CERT_ROLE}   ::1/128      scram-sha-256 clientcert=verify-full
hostssl   all  all        127.0.0.1/32 scram-sha-256
hostssl   all  all        ::1/128      scram-sha-256
"""

NO_ATTACK = "no attacker"

_RANK = {Verdict.READ: 3, Verdict.FOOLED: 2, Verdict.REFUSED: 1}


# ------------------------------------------------------------------------------------------- the server


@dataclass
class TlsServer:
    """A running throwaway TLS-only cluster, its CA, and a client certificate for :data:`CERT_ROLE`."""

    cluster: TempCluster
    ca: CertificateAuthority
    ca_file: Path
    client_files: ClientFiles
    password: str

    @property
    def port(self) -> int:
        return self.cluster.port


@contextmanager
def tls_server(
    *,
    hba: str = MATRIX_HBA,
    settings: dict[str, str] | None = None,
    password: str | None = None,
    binaries: PgBinaries | None = None,
    template: ClusterTemplate | None = None,
) -> Iterator[TlsServer]:
    """A TLS-only cluster with roles :data:`ROLE` and :data:`CERT_ROLE` (password and certificate).

    ``binaries`` default to the first installation found; a ``template`` saves the initdb."""
    import secrets

    password = password or secrets.token_urlsafe(12)
    cluster = TempCluster(hba=hba, binaries=binaries, template=template)
    try:
        ca = CertificateAuthority.create(common_name="pgbatten matrix CA")
        server = ca.issue_server(["localhost", "127.0.0.1"])
        tls = cluster.root / "tls"
        tls.mkdir(mode=0o755)
        files = {
            "server.crt": server.cert_pem(),
            "server.key": server.key_pem(),
            "ca.crt": ca.cert_pem(),
        }
        for name, data in files.items():
            path = tls / name
            path.touch(mode=0o600 if name.endswith(".key") else 0o644)
            path.write_bytes(data)
            if os.geteuid() == 0:
                os.chown(path, cluster.owner.uid, cluster.owner.gid)
        cluster.settings.update(
            {
                "ssl": "on",
                "ssl_cert_file": f"'{tls / 'server.crt'}'",
                "ssl_key_file": f"'{tls / 'server.key'}'",
                "ssl_ca_file": f"'{tls / 'ca.crt'}'",
                "password_encryption": "'scram-sha-256'",
                **(settings or {}),
            }
        )
        cluster.init()
        cluster.start()
        sql = cluster.sql()
        for role in (ROLE, CERT_ROLE):
            sql.query(f"CREATE ROLE {role} LOGIN PASSWORD :'pw'", {"pw": password})
        # The clients' own files: readable by this process only (libpq refuses a group-readable key).
        client = ca.issue_client(CERT_ROLE)
        mine = Path(tempfile.mkdtemp(prefix="pgbatten-matrix-"))
        client_files = ClientFiles(mine / "client.crt", mine / "client.key", mine / "client.pk8")
        client_files.cert.write_bytes(client.cert_pem())
        client_files.key.touch(mode=0o600)
        client_files.key.write_bytes(client.key_pem())
        client_files.pk8.touch(mode=0o600)
        client_files.pk8.write_bytes(client.key_pk8_der())
        (mine / "ca.crt").write_bytes(ca.cert_pem())
        try:
            yield TlsServer(cluster, ca, mine / "ca.crt", client_files, password)
        finally:
            shutil.rmtree(mine, ignore_errors=True)
    finally:
        cluster.cleanup()


# ----------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One driver, one setting, one attack (or none): what happened."""

    driver: str
    setting: Setting
    attack: str
    """An :class:`Attack` value, or :data:`NO_ATTACK`."""
    verdict: str
    """``read``, ``fooled``, ``refused`` (the man in the middle's account), ``connects``/``fails`` without an
    attacker, ``n/a`` when the driver cannot express the setting, ``no connection`` when it never came."""
    outcome: Outcome
    captured: tuple[str, ...] = ()
    detail: str = ""
    consistent: bool = True
    """The client's own report agrees with the verdict (rows through the attacker exactly when read)."""

    def to_json(self) -> dict[str, object]:
        return {
            "driver": self.driver,
            "sslmode": self.setting.sslmode,
            "variant": str(self.setting.variant) or None,
            "attack": self.attack,
            "verdict": self.verdict,
            "client_got_rows": self.outcome.got_rows,
            "client_error": self.outcome.error or None,
            "unsupported": self.outcome.unsupported,
            "captured": list(self.captured),
            "detail": self.detail,
            "consistent": self.consistent,
        }


def _captured(conns: Sequence[MitmConnection]) -> tuple[str, ...]:
    found: list[str] = []
    for conn in conns:
        if conn.password is not None:
            found.append("password")
        for credential in conn.credentials:
            if credential.startswith("md5"):
                found.append("md5 hash")
            elif credential.startswith("SCRAM client proof"):
                found.append("SCRAM proof")
        if conn.startup:
            found.append("user")
        if conn.queries:
            found.append("SQL")
    return tuple(dict.fromkeys(found))


def judge(
    driver: str, setting: Setting, attack: Attack, outcome: Outcome, conns: Sequence[MitmConnection]
) -> Cell:
    """A cell from the client's own report and the man in the middle's account of its connections."""
    if outcome.unsupported is not None:
        return Cell(driver, setting, str(attack), "n/a", outcome, detail=outcome.unsupported)
    if not conns:
        return Cell(
            driver,
            setting,
            str(attack),
            "no connection",
            outcome,
            detail=outcome.error,
            consistent=not outcome.got_rows,
        )
    worst = max(conns, key=lambda c: _RANK[c.verdict])
    verdict = worst.verdict
    detail = (
        worst.refusal
        or worst.error
        or (f"upstream login {worst.upstream_login}" if worst.upstream_login else "")
    )
    consistent = outcome.got_rows == (verdict == Verdict.READ)
    if outcome.got_rows and outcome.value != EXPECTED_VALUE:
        consistent = False
    return Cell(driver, setting, str(attack), verdict, outcome, _captured(conns), detail, consistent)


# -------------------------------------------------------------------------------------- documented libpq


def libpq_documented(sslmode: str, attack: Attack) -> bool:
    """Whether libpq's documented ``sslmode`` lets the client go on through ``attack`` (fooled or read).

    From the libpq documentation's SSL mode table: ``disable``/``allow`` may talk plaintext, ``prefer``
    falls back to it, ``require`` encrypts without checking the certificate, ``verify-ca`` checks the chain,
    ``verify-full`` the chain and the host name. The matrix's man in the middle forges with the client's CA
    for ``expired`` and ``downgrade-auth`` (a certificate for another host).
    """
    if sslmode in ("disable", "allow", "prefer"):
        return True
    if attack == Attack.STRIP:
        return False
    if sslmode == "require":
        return True
    if sslmode == "verify-ca":
        return attack in (Attack.SAME_CA_WRONG_HOST, Attack.DOWNGRADE_AUTH)
    return False


def libpq_connects(sslmode: str) -> bool:
    """Whether libpq's documented ``sslmode`` reaches a TLS-only server (given its CA when verifying)."""
    return sslmode != "disable"


# ---------------------------------------------------------------------------------------------- matrix


@dataclass(frozen=True)
class DriverReport:
    key: str
    label: str
    unavailable: str | None = None
    fix: str = ""
    notes: tuple[str, ...] = ()


@dataclass
class MatrixResult:
    drivers: list[DriverReport]
    settings: list[Setting]
    attacks: list[Attack]
    cells: list[Cell] = field(default_factory=list)
    elapsed: float = 0.0
    server_version: str = ""

    def cell(self, driver: str, setting: Setting, attack: str) -> Cell | None:
        return next(
            (c for c in self.cells if c.driver == driver and c.setting == setting and c.attack == attack),
            None,
        )

    def departures(self, driver: str) -> list[str]:
        """Where the driver's plain sslmode settings behaved unlike libpq's documented ones, one line each."""
        out: list[str] = []
        for setting in self.settings:
            if setting.variant != Variant.PLAIN:
                continue
            parts: list[str] = []
            control = self.cell(driver, setting, NO_ATTACK)
            if control is not None and control.verdict in ("connects", "fails"):
                connects = control.verdict == "connects"
                if connects != libpq_connects(setting.sslmode):
                    why = f" ({control.outcome.error})" if control.outcome.error else ""
                    parts.append(("connects" if connects else "does not connect") + f" with no attacker{why}")
            refused: list[str] = []
            fooled: list[str] = []
            for attack in self.attacks:
                cell = self.cell(driver, setting, str(attack))
                if cell is None or cell.verdict not in (Verdict.READ, Verdict.FOOLED, Verdict.REFUSED):
                    continue
                went_on = cell.verdict != Verdict.REFUSED
                if went_on != libpq_documented(setting.sslmode, attack):
                    (fooled if went_on else refused).append(str(attack))
            if refused:
                parts.append(f"refuses {', '.join(refused)}, which libpq's {setting.sslmode} lets through")
            if fooled:
                parts.append(f"is fooled by {', '.join(fooled)}, which libpq's {setting.sslmode} refuses")
            if parts:
                out.append(f"{setting.label} " + "; ".join(parts))
        return out

    def row(self, driver: str, setting: Setting) -> list[Cell]:
        return [c for c in self.cells if c.driver == driver and c.setting == setting]

    def fooled_by(self, driver: str, setting: Setting) -> list[str]:
        """The attacks the setting let through (fooled or read), in attack order."""
        return [c.attack for c in self.row(driver, setting) if c.verdict in (Verdict.READ, Verdict.FOOLED)]

    def inconsistent(self) -> list[Cell]:
        return [c for c in self.cells if not c.consistent]

    def to_json(self) -> dict[str, object]:
        return {
            "server_version": self.server_version,
            "elapsed_seconds": round(self.elapsed, 1),
            "drivers": [
                {
                    "key": d.key,
                    "label": d.label,
                    "unavailable": d.unavailable,
                    "departures": self.departures(d.key),
                }
                for d in self.drivers
            ],
            "cells": [c.to_json() for c in self.cells],
        }


def full_settings(
    sslmodes: Sequence[str] = SSLMODES, variants: Sequence[Variant] = tuple(Variant)
) -> list[Setting]:
    return [Setting(mode, variant) for mode in sslmodes for variant in variants]  # type: ignore[arg-type]


def parse_clients(text: str | None) -> list[str]:
    if text is None:
        return list(DRIVERS)
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [w for w in wanted if w not in DRIVERS]
    if unknown or not wanted:
        raise UsageError(f"--clients takes a comma-separated list of {', '.join(DRIVERS)}; not {text!r}")
    return list(dict.fromkeys(wanted))


def run_matrix(
    clients: Sequence[str] = tuple(DRIVERS),
    *,
    settings: Sequence[Setting] | None = None,
    attacks: Sequence[Attack] = tuple(Attack),
    progress: Callable[[Cell], None] | None = None,
    server: TlsServer | None = None,
    skip_missing: bool = True,
) -> MatrixResult:
    """Measure every (driver, setting, attack) cell; drivers missing on this machine are reported, not run
    (unless ``skip_missing`` is False: then a missing one is a ``UsageError``)."""
    started = time.monotonic()
    settings = list(settings) if settings is not None else full_settings()
    with ExitStack() as stack:
        if server is None:
            server = stack.enter_context(tls_server())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgbatten-matrix-")))
        result = MatrixResult([], settings, list(attacks), server_version=str(server.cluster.bin.major))
        upstream = Target("127.0.0.1", server.port)
        relay = stack.enter_context(Relay("127.0.0.1", server.port, max_connections=None, max_bytes=0))
        mitms = {
            attack: stack.enter_context(
                Mitm(
                    MitmOptions(listen=Target("127.0.0.1", 0), upstream=upstream, attack=attack, ca=server.ca)
                )
            )
            for attack in attacks
        }
        for key in clients:
            driver = DRIVERS[key](workdir)
            missing = driver.unavailable()
            label = driver.label if missing is None else key
            result.drivers.append(DriverReport(key, label, missing, driver.fix, driver.notes))
            if missing is not None:
                if not skip_missing:
                    raise UsageError(f"{key}: {missing}")
                continue
            driver.start()
            try:
                for setting in settings:
                    _run_setting(driver, setting, server, relay, mitms, result, progress)
            finally:
                driver.stop()
    result.elapsed = time.monotonic() - started
    return result


def _endpoint(server: TlsServer, port: int, setting: Setting) -> Endpoint:
    return Endpoint(
        port=port,
        user=CERT_ROLE if setting.variant == Variant.CLIENT_CERT else ROLE,
        password=server.password,
        ca_file=server.ca_file,
        client_files=server.client_files,
    )


def _run_setting(
    driver: Driver,
    setting: Setting,
    server: TlsServer,
    relay: Relay,
    mitms: dict[Attack, Mitm],
    result: MatrixResult,
    progress: Callable[[Cell], None] | None,
) -> None:
    outcome = driver.run(_endpoint(server, relay.port, setting), setting, QUERY)
    relay.wait_connections(10)
    if outcome.unsupported is not None:
        control = Cell(driver.key, setting, NO_ATTACK, "n/a", outcome, detail=outcome.unsupported)
    else:
        verdict = "connects" if outcome.got_rows else "fails"
        control = Cell(driver.key, setting, NO_ATTACK, verdict, outcome, detail=outcome.error)
    result.cells.append(control)
    if progress is not None:
        progress(control)
    for attack, mitm in mitms.items():
        if outcome.unsupported is not None:
            cell = judge(driver.key, setting, attack, outcome, [])
        else:
            before = len(mitm.connections)
            attacked = driver.run(_endpoint(server, mitm.port, setting), setting, QUERY)
            mitm.wait_connections(15)
            cell = judge(driver.key, setting, attack, attacked, mitm.connections[before:])
        result.cells.append(cell)
        if progress is not None:
            progress(cell)
