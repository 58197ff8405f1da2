"""`pgbatten ca`: the certificate authority."""

from __future__ import annotations

from pathlib import Path

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file


@main.group()
def ca() -> None:
    """The certificate authority that signs server and client certificates."""


@ca.command("init")
@opt.ca_dir
@opt.key_type
@opt.ca_passphrase
@click.option("--common-name", default="pgbatten CA", show_default=True, help="Subject CN of the CA.")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500))
@opt.json_output()
def ca_init(
    ca_dir: Path | None,
    key_type: str,
    ca_passphrase_file: Path | None,
    common_name: str,
    days: int,
    as_json: bool,
) -> None:
    """Create a CA (root certificate and key) in the CA directory."""
    from rich.markup import escape

    from pgbatten.pki import CAStore, KeyType, default_ca_dir

    store = CAStore(ca_dir or default_ca_dir())
    kind = KeyType.parse(key_type)
    # A key alone is what a `ca init` killed before writing the certificate leaves: replaced, kept aside.
    aside = store.set_aside_half_made()
    authority = store.init(
        key_type=kind,
        passphrase=read_secret_file(ca_passphrase_file),
        common_name=common_name,
        days=days,
    )
    if as_json:
        import json

        from pgbatten.certfacts import fingerprint_sha256
        from pgbatten.timestamps import iso

        document = {
            "schema": "pgbatten.ca-init/1",
            "ca_dir": str(store.path),
            "certificate": str(store.ca_cert_path),
            "key": str(store.ca_key_path),
            "key_encrypted": ca_passphrase_file is not None,
            "common_name": common_name,
            "key_type": kind.value,
            "serial": str(authority.certificate.serial_number),
            "not_before": iso(authority.certificate.not_valid_before_utc),
            "not_after": iso(authority.not_after),
            "fingerprint_sha256": fingerprint_sha256(authority.certificate),
            "interrupted_key_moved_to": None if aside is None else str(aside),
        }
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    out = make_console()
    if aside is not None:
        out.print(
            f"{store.ca_key_path} was left by an interrupted run (no certificate, nothing signed with it):"
            f" moved aside to {aside}",
            markup=False,
        )
    # The name and paths are data: "[ops]" or "x[/]" print as written rather than as markup.
    out.print(f"Created CA [bold]{escape(common_name)}[/] in {escape(str(store.path))}")
    out.print(f"  certificate (hand to clients as sslrootcert): {store.ca_cert_path}", markup=False)
    out.print(f"  private key (keep secret, mode 0600):          {store.ca_key_path}", markup=False)
    out.print(f"  valid until {authority.not_after:%Y-%m-%d %H:%M} UTC")
