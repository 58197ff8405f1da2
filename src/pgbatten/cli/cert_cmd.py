"""`pgbatten cert` and `pgbatten crl`: client certificates and their bundles, the inventory listing, and
what the revocation commands (:mod:`pgbatten.cli.revoke_cmd`) share with them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file

if TYPE_CHECKING:
    from rich.console import Console

    from pgbatten.cluster.discover import Cluster
    from pgbatten.pki import CAStore


def open_ca(ca_dir: Path | None) -> CAStore:
    from pgbatten.pki import default_ca_dir
    from pgbatten.pki.operations import open_store

    return open_store(ca_dir or default_ca_dir())


def hex_serial(serial: int) -> str:
    return f"{serial:#x}"


def named_cluster(pgdata: Path | None, cluster_name: str | None, pg_bindir: Path | None) -> Cluster | None:
    if pgdata is None and cluster_name is None:
        return None
    from pgbatten.cluster.discover import discover

    return discover(pgdata=pgdata, cluster=cluster_name, pg_bindir=pg_bindir)


@main.group()
def cert() -> None:
    """Client certificates: issue bundles, revoke, list."""


@main.group()
def crl() -> None:
    """The certificate revocation list (CRL)."""


# -- cert client ------------------------------------------------------------------------------------------


@cert.command("client")
@click.argument("user")
@opt.ca_dir
@opt.ca_passphrase
@click.option(
    "--out",
    "out_dir",
    # No file_okay=False: click would answer a file in the way with a multi-line usage error, before
    # the library can say it in one line.
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory (default: ./USER).",
)
@opt.days()
@opt.key_type
@opt.file(
    "--p12-password-file",
    "File holding the PKCS#12 password (first line); default: generate one and print it once.",
)
@opt.cluster
@click.option(
    "--server-host",
    default=None,
    metavar="NAME",
    help="Server name for INSTALL.md (default: from the cluster's certificate, else the CA's newest one).",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Server port for INSTALL.md (default: the cluster's; required without --pgdata/--cluster).",
)
@click.option("--dbname", default="postgres", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
@opt.json_output()
def cert_client(
    user: str,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    out_dir: Path | None,
    days: int,
    key_type: str,
    p12_password_file: Path | None,
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    server_host: str | None,
    port: int | None,
    dbname: str,
    force: bool,
    as_json: bool,
) -> None:
    """Issue a client certificate for USER (CN = USER) and write a bundle every driver can use."""
    from pgbatten.pki import hints
    from pgbatten.pki.operations import issue_client_bundle, prepare_client_bundle
    from pgbatten.pki.served import cluster_view, remember_served

    store = open_ca(ca_dir)
    cluster = named_cluster(pgdata, cluster_name, pg_bindir)
    view = cluster_view(cluster, store)
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
        cluster=view,
    )
    authority = store.load(read_secret_file(ca_passphrase_file))
    result = issue_client_bundle(store, authority, request)
    remember_served(store, view)
    if as_json:
        print_json(result.to_json())
        return

    out = make_console()
    entry, bundle = result.entry, result.bundle
    lines = [
        f"Issued a client certificate for {user} (serial {hex_serial(entry.serial)})",
        f"  valid until {entry.not_after:%Y-%m-%d %H:%M} UTC, signed by the CA in {store.path}",
        f"  INSTALL.md connects to host={request.server_host} port={request.port} dbname={request.dbname}",
        f"Bundle in {bundle.directory}:",
    ]
    for path, what in (
        (bundle.cert_path, "certificate (PEM)"),
        (bundle.key_path, "private key (PEM, 0600)"),
        (bundle.root_cert_path, "CA certificate, the sslrootcert"),
        (bundle.pk8_path, "private key as PKCS#8 DER for PgJDBC (0600)"),
        (bundle.p12_path, "PKCS#12 for PgJDBC, .NET, Windows (0600)"),
        (bundle.install_md_path, "where the files go, settings for each driver"),
    ):
        lines.append(f"  {path.name:<16} {what}")
    if result.password_generated:
        lines.append("PKCS#12 password (shown once, stored nowhere; hand it over separately):")
        lines.append(f"  {result.p12_password.decode()}")
    # Role names and paths are data, not markup: "[red]bob" or "x[/]" print as written, never as rich
    # markup (and cannot crash here, after the certificate is issued, before its password is shown).
    write_lines(out, lines)
    notes = [
        f"{user}'s earlier certificate {hex_serial(e.serial)} stays valid until {e.not_after:%Y-%m-%d}; "
        "revoke it with: "
        + hints.command("cert", "revoke", hex_serial(e.serial), "--ca-dir", str(store.path))
        for e in result.earlier
    ]
    write_lines(out, [tag(out, "note:", "yellow") + " " + n for n in notes])
    write_lines(out, [tag(out, "warning:", "yellow") + " " + w for w in result.warnings])


def tag(out: Console, text: str, colour: str) -> str:
    if out.is_terminal and not out.no_color:
        code = {"yellow": 33, "green": 32, "red": 31}[colour]
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def write_lines(out: Console, lines: list[str]) -> None:
    """Plain lines at once: no markup, no wrapping (commands stay on one line to be copied)."""
    if lines:
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()


# -- cert list --------------------------------------------------------------------------------------------

# Past this many warnings of one kind, cert list prints a count instead (--json still holds every one).
WARNINGS_SHOWN = 20


@cert.command("list")
@opt.ca_dir
@opt.json_output()
def cert_list(ca_dir: Path | None, as_json: bool) -> None:
    """Every certificate the CA issued, the CRL's size and next update, and what ends soon."""
    from pgbatten.pki.listing import list_inventory

    listing = list_inventory(open_ca(ca_dir))
    if as_json:
        print_json(listing.to_json())
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
            f"CRL {crl_obj.path}: {crl_obj.entries} revoked, {size_text(crl_obj.size_bytes)}, last update "
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


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def print_json(document: object) -> None:
    import json

    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
