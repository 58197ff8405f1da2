"""`pgbatten secure`: make a cluster TLS-only."""

from __future__ import annotations

import sys
from pathlib import Path

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


def _confirm(question: str) -> bool:
    if sys.stdin is None or not sys.stdin.isatty():
        from pgbatten.errors import UsageError

        raise UsageError("no terminal to confirm on; pass --yes to apply, or --dry-run to only show the plan")
    return click.confirm(question, default=False)


@main.command("secure")
@cluster_options
@click.option(
    "--host", "hosts", multiple=True, metavar="NAME", help="Name or address clients use (repeatable)."
)
@ca_dir_option
@passphrase_option
@click.option("--tls-min", type=click.Choice(["1.2", "1.3"]), default="1.2", show_default=True)
@click.option(
    "--client-auth",
    type=click.Choice(["none", "verify-full", "cert"]),
    default="none",
    show_default=True,
    help="verify-full: password plus client certificate; cert: the certificate alone.",
)
@click.option("--cert-map", default=None, metavar="NAME", help="pg_ident map for --client-auth cert.")
@key_type_option
@click.option(
    "--days", default=365, show_default=True, type=click.IntRange(1, 3650), help="Server cert validity."
)
@click.option("--dry-run", is_flag=True, help="Show the plan and exit without touching anything.")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--bench", is_flag=True, help="Measure connection cost before and after; print the TLS tax.")
def secure_cmd(
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    hosts: tuple[str, ...],
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    tls_min: str,
    client_auth: str,
    cert_map: str | None,
    key_type: str,
    days: int,
    dry_run: bool,
    yes: bool,
    bench: bool,
) -> None:
    """Make a running cluster TLS-only, by reload, and prove it from outside."""
    from pgbatten.cluster.discover import discover
    from pgbatten.pki import KeyType
    from pgbatten.secure import SecureOptions, secure

    options = SecureOptions(
        hosts=hosts,
        ca_dir=ca_dir,
        tls_min="1.3" if tls_min == "1.3" else "1.2",
        client_auth=client_auth,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        cert_map=cert_map,
        key_type=KeyType.parse(key_type),
        days=days,
        dry_run=dry_run,
        yes=yes,
        ca_passphrase=read_secret_file(ca_passphrase_file),
    )
    options.request()  # reject bad --host values before looking at the cluster
    cluster = discover(pgdata=pgdata, cluster=cluster_name, pg_bindir=pg_bindir)
    console = make_console()
    if not bench:
        secure(cluster, options, console=console, confirm=_confirm)
        return
    from pgbatten.bench.server import BenchReport
    from pgbatten.cli.bench_cmd import bench_for_secure, print_tax

    def measure(when: str) -> BenchReport | None:
        return bench_for_secure(
            cluster,
            ca_dir=ca_dir,
            ca_passphrase=options.ca_passphrase,
            client_auth=options.client_auth,
            when=when,
            console=console,
        )

    before = measure("before")
    result = secure(cluster, options, console=console, confirm=_confirm)
    after = measure("after") if result.applied else None
    if before is not None and after is not None:
        print_tax(console, before, after)
