"""`pgbatten ca`: the certificate authority."""

from __future__ import annotations

from pathlib import Path

import click

from pgbatten.cli.app import (
    ca_dir_option,
    key_type_option,
    main,
    make_console,
    passphrase_option,
    read_secret_file,
)


@main.group()
def ca() -> None:
    """The certificate authority that signs server and client certificates."""


@ca.command("init")
@ca_dir_option
@key_type_option
@passphrase_option
@click.option("--common-name", default="pgbatten CA", show_default=True, help="Subject CN of the CA.")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500))
def ca_init(
    ca_dir: Path | None, key_type: str, ca_passphrase_file: Path | None, common_name: str, days: int
) -> None:
    """Create a CA (root certificate and key) in the CA directory."""
    from rich.markup import escape

    from pgbatten.pki import CAStore, KeyType, default_ca_dir

    store = CAStore(ca_dir or default_ca_dir())
    authority = store.init(
        key_type=KeyType.parse(key_type),
        passphrase=read_secret_file(ca_passphrase_file),
        common_name=common_name,
        days=days,
    )
    out = make_console()
    # The name and paths are data: "[ops]" or "x[/]" print as written rather than as markup.
    out.print(f"Created CA [bold]{escape(common_name)}[/] in {escape(str(store.path))}")
    out.print(f"  certificate (hand to clients as sslrootcert): {store.ca_cert_path}", markup=False)
    out.print(f"  private key (keep secret, mode 0600):          {store.ca_key_path}", markup=False)
    out.print(f"  valid until {authority.not_after:%Y-%m-%d %H:%M} UTC")
