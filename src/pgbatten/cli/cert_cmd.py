"""`pgbatten cert` and `pgbatten crl`: client certificates, their bundles, revocation and the CRL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgbatten.cli.app import (
    ca_dir_option,
    cluster_options,
    key_type_option,
    main,
    make_console,
    passphrase_option,
    read_secret_file,
)

if TYPE_CHECKING:
    from rich.console import Console

    from pgbatten.cluster.discover import Cluster
    from pgbatten.pki import CAStore, CertificateAuthority

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document (schema in the README)."
    )(func)


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
    from pgbatten.pki import default_ca_dir
    from pgbatten.pki.operations import open_store

    return open_store(ca_dir or default_ca_dir())


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
    # the library can say it in one line.
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
    from rich.markup import escape

    from pgbatten.pki.operations import issue_client_bundle, prepare_client_bundle

    store = _store(ca_dir)
    request = prepare_client_bundle(
        store,
        user,
        out_dir=out_dir,
        key_type=key_type,
        days=days,
        server_host=server_host,
        port=port,
        dbname=dbname,
        force=force,
        p12_password=read_secret_file(p12_password_file),
    )
    authority = store.load(read_secret_file(ca_passphrase_file))
    result = issue_client_bundle(store, authority, request)

    out = make_console()
    entry, bundle = result.entry, result.bundle
    # Role names and paths are data, not markup: "[red]bob" or "x[/]" must print as written (and must not
    # crash here, after the certificate is issued, before its PKCS#12 password is shown).
    out.print(f"Issued a client certificate for [bold]{escape(user)}[/] (serial {_hex(entry.serial)})")
    out.print(
        f"  valid until {entry.not_after:%Y-%m-%d %H:%M} UTC, signed by the CA in {store.path}", markup=False
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
    if result.password_generated:
        out.print("PKCS#12 password (shown once, stored nowhere; hand it over separately):")
        out.print(f"  {result.p12_password.decode()}", markup=False)
    for earlier in result.earlier:
        # soft_wrap: the command must stay on one line to be copied.
        out.print(
            f"[yellow]note:[/] {escape(user)}'s earlier certificate {_hex(earlier.serial)} stays valid until "
            f"{earlier.not_after:%Y-%m-%d}; revoke it with: pgbatten cert revoke {_hex(earlier.serial)}",
            soft_wrap=True,
        )


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
    from rich.markup import escape

    from pgbatten.pki import operations

    store = _store(ca_dir)
    hint = "pgbatten crl refresh --pgdata DIR" if pgdata or cluster_name else None
    operations.select_revocation(store, target, refresh_hint=hint)
    authority = store.load(read_secret_file(ca_passphrase_file))
    cluster = _cluster(pgdata, cluster_name)
    if cluster is not None:
        from pgbatten.secure.crl import preflight

        preflight(cluster, authority)  # refuse before the inventory changes

    result = operations.revoke(store, authority, target, crl_days=crl_days)
    out = make_console()
    for entry in result.revoked:
        out.print(f"Revoked {entry.kind} certificate {_hex(entry.serial)} of [bold]{escape(entry.name)}[/]")
    crl_obj = result.crl.crl
    out.print(
        f"CRL {result.crl.path}: {result.crl.entries} revoked, next update "
        f"{crl_obj.next_update_utc:%Y-%m-%d %H:%M} UTC",
        markup=False,
    )
    if cluster is None:
        out.print(
            "[yellow]The servers do not know yet:[/] install the CRL with "
            "'pgbatten crl refresh --pgdata DIR' (or --cluster V/N)"
        )
        return
    _install(out, cluster, store, authority, list(result.proof_serials), timeout, after="revoked")
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
    from rich.markup import escape

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

# Past this many warnings of one kind, cert list prints a count instead (--json still holds every one).
WARNINGS_SHOWN = 20


@cert.command("list")
@ca_dir_option
@json_option
def cert_list(ca_dir: Path | None, as_json: bool) -> None:
    """Every certificate the CA issued, the CRL's size and next update, and what ends soon."""
    from pgbatten.pki.listing import list_inventory

    listing = list_inventory(_store(ca_dir))
    if as_json:
        _print_json(listing.to_json())
        return
    out = make_console()
    lines: list[str] = []
    if listing.entries:
        # Plain columns rather than a table: serials stay whole and copyable, and the output greps. One
        # write for all rows: 100,000 certificates list in well under a second.
        rows = [("KIND", "NAME", "SERIAL", "NOT AFTER (UTC)", "STATUS")]
        status = listing.status
        # isoformat is several times faster than strftime; "YYYY-MM-DD HH:MM" is its first 16 characters.
        rows += [
            (e.kind, e.name, f"{e.serial:#x}", e.not_after.isoformat(" ")[:16], status(e))
            for e in listing.entries
        ]
        w1 = max(len(row[1]) for row in rows)
        w2 = max(len(row[2]) for row in rows)
        lines += [f"{a:<6}  {b:<{w1}}  {c:<{w2}}  {d:<16}  {e}" for a, b, c, d, e in rows]
    else:
        lines.append(f"No certificates issued yet by the CA in {listing.ca_dir}")
    crl_obj = listing.crl
    if crl_obj is None:
        lines.append("CRL: none written yet")
    else:
        next_update = f"{crl_obj.next_update:%Y-%m-%d %H:%M} UTC" if crl_obj.next_update else "none"
        lines.append(
            f"CRL {crl_obj.path}: {crl_obj.entries} revoked, {_size(crl_obj.size_bytes)}, last update "
            f"{crl_obj.last_update:%Y-%m-%d %H:%M} UTC, next update {next_update}"
        )
    prefix = "\x1b[33mwarning:\x1b[0m" if out.is_terminal and not out.no_color else "warning:"
    shown: dict[str, int] = {}
    for warning in listing.warnings:
        shown[warning.code] = shown.get(warning.code, 0) + 1
        if shown[warning.code] <= WARNINGS_SHOWN:
            lines.append(f"{prefix} {warning.message}")
    for code, count in shown.items():
        if count > WARNINGS_SHOWN:
            lines.append(
                f"{prefix} ... and {count - WARNINGS_SHOWN} more like that ({code}); "
                "'pgbatten cert list --json' lists every one"
            )
    out.file.write("\n".join(lines) + "\n")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def _print_json(document: object) -> None:
    import json

    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


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
    from pgbatten.pki.operations import refresh_crl

    store = _store(ca_dir)
    authority = store.load(read_secret_file(ca_passphrase_file))
    cluster = _cluster(pgdata, cluster_name)
    if cluster is not None:
        from pgbatten.secure.crl import preflight

        preflight(cluster, authority)
    result = refresh_crl(store, authority, crl_days=crl_days)
    out = make_console()
    out.print(
        f"Signed CRL {result.path}: {result.entries} revoked, next update "
        f"{result.crl.next_update_utc:%Y-%m-%d %H:%M} UTC",
        markup=False,
    )
    if cluster is not None:
        # Prove with the newest revocations of certificates that could still be presented.
        _install(out, cluster, store, authority, list(result.newest_serials), timeout, after="refreshed")
    _remind_refresh(out, result.crl.next_update_utc)
