"""`pgbatten cert` and `pgbatten crl`: client certificates, their bundles, revocation and the CRL."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.markup import escape

from pgbatten.cli.app import (
    ca_dir_option,
    cluster_options,
    key_type_option,
    main,
    make_console,
    passphrase_option,
    read_secret_file,
)
from pgbatten.errors import PgBattenError, PKIError, UsageError

if TYPE_CHECKING:
    from cryptography import x509
    from rich.console import Console

    from pgbatten.cluster.discover import Cluster
    from pgbatten.pki import CAStore, CertificateAuthority, InventoryEntry

# `cert list` warns this long before a certificate ends; the CRL gets a shorter window since it is
# re-signed far more often (default validity 30 days) and its end locks out every client certificate.
EXPIRY_WARNING = dt.timedelta(days=30)
CRL_WARNING = dt.timedelta(days=7)

F = TypeVar("F", bound=Callable[..., Any])


def crl_days_option(func: F) -> F:
    return click.option(
        "--crl-days",
        default=30,
        show_default=True,
        type=click.IntRange(1, 3650),
        help="Days until the CRL's nextUpdate; re-sign it before then with 'pgbatten crl refresh'.",
    )(func)


def timeout_option(func: F) -> F:
    return click.option(
        "--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 300), help="Seconds."
    )(func)


def _store(ca_dir: Path | None) -> CAStore:
    from pgbatten.pki import CAStore, default_ca_dir

    store = CAStore(ca_dir or default_ca_dir())
    if not store.exists():
        raise PKIError(f"no CA in {store.path}; run 'pgbatten ca init' (or 'pgbatten secure') first")
    return store


def _hex(serial: int) -> str:
    return f"{serial:#x}"


def _cluster(pgdata: Path | None, cluster_name: str | None) -> Cluster | None:
    if pgdata is None and cluster_name is None:
        return None
    from pgbatten.cluster.discover import discover

    return discover(pgdata=pgdata, cluster=cluster_name)


@main.group()
def cert() -> None:
    """Client certificates: issue bundles, revoke, list."""


@main.group()
def crl() -> None:
    """The certificate revocation list (CRL)."""


# -- cert client ------------------------------------------------------------------------------------------


@cert.command("client")
@click.argument("user")
@ca_dir_option
@passphrase_option
@click.option(
    "--out",
    "out_dir",
    # No file_okay=False: click would answer a file in the way with a multi-line usage error, before
    # _refuse_existing can say it in one line.
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory (default: ./USER).",
)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@key_type_option
@click.option(
    "--p12-password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File holding the PKCS#12 password (first line); default: generate one and print it once.",
)
@click.option("--server-host", default=None, metavar="NAME", help="Server name for INSTALL.md.")
@click.option("--port", default=5432, show_default=True, type=click.IntRange(1, 65535))
@click.option("--dbname", default="postgres", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
def cert_client(
    user: str,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    out_dir: Path | None,
    days: int,
    key_type: str,
    p12_password_file: Path | None,
    server_host: str | None,
    port: int,
    dbname: str,
    force: bool,
) -> None:
    """Issue a client certificate for USER (CN = USER) and write a bundle every driver can use."""
    from pgbatten.pki import KeyType, check_role_name, generate_password, render_install_md
    from pgbatten.pki.bundle import write_client_bundle

    # Every input is checked before the CA key is touched, so a mistake costs nothing.
    check_role_name(user)
    kind = KeyType.parse(key_type)
    target = out_dir if out_dir is not None else _default_out(user)
    _refuse_existing(target, force)
    store = _store(ca_dir)
    host = server_host or _server_host(store)
    render_install_md(user, host, port, dbname)  # validates host, port and dbname
    password_file = read_secret_file(p12_password_file)
    authority = store.load(read_secret_file(ca_passphrase_file))

    issued = authority.issue_client(user, key_type=kind, days=days)
    generated = password_file is None
    password = password_file if password_file is not None else generate_password().encode()
    others = [e for e in store.entries() if e.kind == "client" and e.name == user and not e.revoked]
    # Record before the key leaves this process: an unrecorded certificate could never be revoked, and
    # with --force the old bundle is already gone once write_client_bundle returns.
    store.record(issued, "client", user)
    try:
        bundle = write_client_bundle(
            target,
            issued,
            authority.certificate,
            p12_password=password,
            server_host=host,
            server_port=port,
            dbname=dbname,
            force=force,
        )
    except BaseException:
        # Nobody holds this certificate's key: drop it from the inventory again.
        with contextlib.suppress(PgBattenError):
            store.forget(issued.serial)
        raise

    out = make_console()
    # Role names and paths are data, not markup: "[red]bob" or "x[/]" must print as written (and must not
    # crash here, after the certificate is issued, before its PKCS#12 password is shown).
    out.print(f"Issued a client certificate for [bold]{escape(user)}[/] (serial {_hex(issued.serial)})")
    out.print(
        f"  valid until {issued.not_after:%Y-%m-%d %H:%M} UTC, signed by the CA in {store.path}", markup=False
    )
    out.print(f"Bundle in {bundle.directory}:", markup=False)
    for path, what in (
        (bundle.cert_path, "certificate (PEM)"),
        (bundle.key_path, "private key (PEM, 0600)"),
        (bundle.root_cert_path, "CA certificate, the sslrootcert"),
        (bundle.pk8_path, "private key as PKCS#8 DER for PgJDBC (0600)"),
        (bundle.p12_path, "PKCS#12 for PgJDBC, .NET, Windows (0600)"),
        (bundle.install_md_path, "where the files go, settings for each driver"),
    ):
        out.print(f"  {path.name:<16} {what}", markup=False)
    if generated:
        out.print("PKCS#12 password (shown once, stored nowhere; hand it over separately):")
        out.print(f"  {password.decode()}", markup=False)
    for entry in others:
        # soft_wrap: the command must stay on one line to be copied.
        out.print(
            f"[yellow]note:[/] {escape(user)}'s earlier certificate {_hex(entry.serial)} stays valid until "
            f"{entry.not_after:%Y-%m-%d}; revoke it with: pgbatten cert revoke {_hex(entry.serial)}",
            soft_wrap=True,
        )


def _default_out(user: str) -> Path:
    # A role name may hold characters no directory name should (a slash, a leading dot).
    if user in (".", "..") or user.startswith(".") or "/" in user or "\\" in user or "\0" in user:
        raise UsageError(f"{user!r} is not usable as a directory name; pass --out DIR")
    return Path(user)


def _refuse_existing(target: Path, force: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        return
    from pgbatten.errors import FileProblem

    # Even --force replaces only a bundle directory, never a file or a symlink someone put there.
    if not target.is_dir() or target.is_symlink():
        raise FileProblem(target, "exists and is not a directory")
    if not force and any(target.iterdir()):
        raise FileProblem(
            target, "already exists; refusing to overwrite a bundle (use --force to replace it)"
        )


def _server_host(store: CAStore) -> str:
    """The name the newest server certificate of this CA was issued for, else this machine's name."""
    servers = [e for e in store.entries() if e.kind == "server" and not e.revoked]
    if servers:
        return servers[-1].name
    return socket.getfqdn() or "localhost"


# -- cert revoke ------------------------------------------------------------------------------------------


@cert.command("revoke")
@click.argument("target", metavar="USER|SERIAL")
@ca_dir_option
@passphrase_option
@cluster_options
@crl_days_option
@timeout_option
def cert_revoke(
    target: str,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    pgdata: Path | None,
    cluster_name: str | None,
    crl_days: int,
    timeout: float,
) -> None:
    """Revoke USER's certificates (or one by SERIAL), write the CRL, and install it on a cluster."""
    from pgbatten.pki import parse_serial

    store = _store(ca_dir)
    found = store.find(target)
    # The same rule as CAStore.revoke: a serial of any kind, a name only for client certificates.
    serial = parse_serial(target)
    matches = [e for e in found if e.serial == serial or e.kind == "client"]
    if not matches and found:
        raise PKIError(
            f"{target!r} is a server certificate; revoke it by serial: "
            f"pgbatten cert revoke {_hex(found[-1].serial)}"
        )
    if not matches:
        raise PKIError(f"no certificate for {target!r} in the CA inventory (see 'pgbatten cert list')")
    if all(e.revoked for e in matches):
        hint = " install the CRL with 'pgbatten crl refresh --pgdata DIR'" if pgdata or cluster_name else ""
        raise PKIError(f"every certificate for {target!r} is already revoked;{hint or ' nothing to do'}")
    authority = store.load(read_secret_file(ca_passphrase_file))
    cluster = _cluster(pgdata, cluster_name)
    if cluster is not None:
        from pgbatten.secure.crl import preflight

        preflight(cluster, authority)  # refuse before the inventory changes

    revoked = store.revoke(target)
    crl_obj = store.write_crl(authority, days=crl_days)
    out = make_console()
    for entry in revoked:
        out.print(f"Revoked {entry.kind} certificate {_hex(entry.serial)} of [bold]{escape(entry.name)}[/]")
    out.print(
        f"CRL {store.crl_path}: {len(list(crl_obj))} revoked, next update "
        f"{crl_obj.next_update_utc:%Y-%m-%d %H:%M} UTC",
        markup=False,
    )
    if cluster is None:
        out.print(
            "[yellow]The servers do not know yet:[/] install the CRL with "
            "'pgbatten crl refresh --pgdata DIR' (or --cluster V/N)"
        )
        return
    _install(out, cluster, store, authority, [e.serial for e in revoked], timeout, after="revoked")
    _remind_refresh(out, crl_obj.next_update_utc)


def _install(
    out: Console,
    cluster: Cluster,
    store: CAStore,
    authority: CertificateAuthority,
    serials: list[int],
    timeout: float,
    *,
    after: str,
) -> None:
    from pgbatten.errors import PgBattenError
    from pgbatten.secure.crl import install_crl

    try:
        plan, outcome = install_crl(
            cluster,
            store,
            authority,
            refuse=serials,
            log=lambda msg: out.print(f"[dim]{escape(msg)}[/]"),
            timeout=timeout,
        )
    except PgBattenError as exc:
        # Keep it one line, but say what did happen: the CA side is done, only the server lags.
        exc.message = f"{exc.message} (the CA inventory and {store.crl_path} are {after}; the cluster is not)"
        raise
    if plan.changed:
        out.print(
            f"Installed the CRL on {cluster.label} as ssl_crl_file = {plan.crl_path} (reload, no restart)",
            markup=False,
        )
    else:
        out.print(f"The CRL on {cluster.label} was already current ({plan.crl_path})", markup=False)
    for proof in outcome.proofs:
        out.print(f"  [green]ok[/] {escape(proof.what)}: {escape(proof.detail)}", soft_wrap=True)
    for original, backup in outcome.backups:
        out.print(f"backup of {original}: {backup}", markup=False)


def _remind_refresh(out: Console, next_update: dt.datetime | None) -> None:
    if next_update is not None:
        out.print(
            f"Re-sign it before {next_update:%Y-%m-%d}, e.g. daily from cron: "
            "pgbatten crl refresh --pgdata DIR (a CRL past its next update makes PostgreSQL refuse "
            "every client certificate)",
            soft_wrap=True,
        )


# -- cert list --------------------------------------------------------------------------------------------


@cert.command("list")
@ca_dir_option
def cert_list(ca_dir: Path | None) -> None:
    """Every certificate the CA issued, the CRL's next update, and what ends soon."""
    store = _store(ca_dir)
    now = dt.datetime.now(dt.UTC)
    entries = store.entries()
    out = make_console()
    if entries:
        # Plain columns rather than a table: serials stay whole and copyable, and the output greps.
        rows = [("KIND", "NAME", "SERIAL", "NOT AFTER (UTC)", "STATUS")]
        rows += [
            (e.kind, e.name, _hex(e.serial), f"{e.not_after:%Y-%m-%d %H:%M}", _status(e, now))
            for e in entries
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            out.print(
                "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + "  " + row[4],
                markup=False,
                soft_wrap=True,
            )
    else:
        out.print(f"No certificates issued yet by the CA in {store.path}", markup=False)
    crl_obj = store.load_crl()
    if crl_obj is None:
        out.print("CRL: none written yet")
    else:
        next_update = crl_obj.next_update_utc
        out.print(
            f"CRL {store.crl_path}: {len(list(crl_obj))} revoked, last update "
            f"{crl_obj.last_update_utc:%Y-%m-%d %H:%M} UTC, next update "
            + (f"{next_update:%Y-%m-%d %H:%M} UTC" if next_update else "none"),
            markup=False,
        )
    for warning in list_warnings(entries, crl_obj, now):
        out.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)


def _status(entry: InventoryEntry, now: dt.datetime) -> str:
    if entry.revoked_at is not None:
        return f"revoked {entry.revoked_at:%Y-%m-%d}"
    if entry.not_after <= now:
        return "expired"
    return f"valid, {(entry.not_after - now).days} days left"


def list_warnings(
    entries: list[InventoryEntry], crl_obj: x509.CertificateRevocationList | None, now: dt.datetime
) -> list[str]:
    """What needs doing soon: certificates about to end, a CRL about to lapse or behind the inventory."""
    warnings: list[str] = []
    for entry in entries:
        if entry.revoked:
            continue
        if entry.not_after <= now:
            warnings.append(f"{entry.kind} certificate {_hex(entry.serial)} of {entry.name} has expired")
        elif entry.not_after - now < EXPIRY_WARNING:
            days = (entry.not_after - now).days
            renew = (
                f"pgbatten cert client {entry.name} --force" if entry.kind == "client" else "pgbatten secure"
            )
            warnings.append(
                f"{entry.kind} certificate {_hex(entry.serial)} of {entry.name} ends in {days} days "
                f"({entry.not_after:%Y-%m-%d}); renew it: {renew}"
            )
    revoked = [e for e in entries if e.revoked_at is not None]
    if crl_obj is None:
        if revoked:
            warnings.append(
                "certificates are revoked but no CRL was written; run 'pgbatten crl refresh --pgdata DIR'"
            )
        return warnings
    next_update = crl_obj.next_update_utc
    if next_update is not None and next_update <= now:
        warnings.append(
            f"the CRL passed its next update on {next_update:%Y-%m-%d %H:%M} UTC: PostgreSQL now refuses "
            "EVERY client certificate; run 'pgbatten crl refresh --pgdata DIR' at once"
        )
    elif next_update is not None and next_update - now < CRL_WARNING:
        warnings.append(
            f"the CRL's next update is {next_update:%Y-%m-%d %H:%M} UTC; after it PostgreSQL refuses every "
            "client certificate: run 'pgbatten crl refresh --pgdata DIR' before then"
        )
    listed = {r.serial_number for r in crl_obj}
    missing = [e for e in revoked if e.serial not in listed]
    if missing:
        warnings.append(
            f"{len(missing)} revoked certificate(s) are not in the CRL yet; run 'pgbatten crl refresh'"
        )
    return warnings


# -- crl refresh ------------------------------------------------------------------------------------------


@crl.command("refresh")
@ca_dir_option
@passphrase_option
@cluster_options
@crl_days_option
@timeout_option
def crl_refresh(
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    pgdata: Path | None,
    cluster_name: str | None,
    crl_days: int,
    timeout: float,
) -> None:
    """Re-sign the CRL with a new next update, and install it on a cluster by reload."""
    store = _store(ca_dir)
    authority = store.load(read_secret_file(ca_passphrase_file))
    cluster = _cluster(pgdata, cluster_name)
    if cluster is not None:
        from pgbatten.secure.crl import preflight

        preflight(cluster, authority)
    crl_obj = store.write_crl(authority, days=crl_days)
    out = make_console()
    out.print(
        f"Signed CRL {store.crl_path}: {len(list(crl_obj))} revoked, next update "
        f"{crl_obj.next_update_utc:%Y-%m-%d %H:%M} UTC",
        markup=False,
    )
    if cluster is not None:
        now = dt.datetime.now(dt.UTC)
        # Prove with the newest revocations of certificates that could still be presented.
        live = [e.serial for e in store.entries() if e.revoked_at is not None and e.not_after > now]
        _install(out, cluster, store, authority, live, timeout, after="refreshed")
    _remind_refresh(out, crl_obj.next_update_utc)
