"""`pgbatten csr` on a server, `pgbatten ca sign` where the CA is: a server key never leaves its server."""

from __future__ import annotations

from pathlib import Path

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file
from pgbatten.cli.ca_cmd import ca


@ca.command("sign")
@click.argument("csr_file", metavar="CSR", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@opt.ca_dir
@opt.ca_passphrase
@click.option(
    "--allow-host",
    "allowed",
    multiple=True,
    metavar="NAME",
    help="A name the server may be certified for: db1.example.com, *.example.com, 10.0.0.5, 10.0.0.0/24."
    " Repeat it; with any, every name the CSR asks for must match one.",
)
@click.option(
    "--key-type",
    "key_types",
    multiple=True,
    metavar="TYPE",
    help="Key types accepted (repeat it): ecdsa-p256, rsa-2048, rsa-3072, rsa-4096. Default: all four.",
)
@opt.days()
@click.option("--name", default=None, help="The inventory name of the server (default: its first host).")
@opt.file("--out", "Write the certificate (with its chain) here; default: standard output.")
@opt.file("--ca-out", "Write the CA certificate(s) the server installs as its ssl_ca_file here.")
@opt.dry_run("Check the CSR and say what would be signed; sign nothing.")
@opt.json_output()
def ca_sign(
    csr_file: Path,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    allowed: tuple[str, ...],
    key_types: tuple[str, ...],
    days: int,
    name: str | None,
    out: Path | None,
    ca_out: Path | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Check a server's CSR (names, key type, no CA bit) and sign it with the CA.

    The server keeps its private key: make the CSR there with `pgbatten csr`, sign it here, and install the
    certificate there with `pgbatten secure --certificate FILE --ca-certificate FILE`.
    """
    import sys

    from pgbatten.errors import FileProblem
    from pgbatten.fleet.sign import sign_server_csr
    from pgbatten.fsutil import atomic_write
    from pgbatten.pki import default_ca_dir
    from pgbatten.pki.csr import CsrPolicy, allowed_key_types

    try:
        data = sys.stdin.buffer.read() if str(csr_file) == "-" else csr_file.read_bytes()
    except OSError as exc:
        raise FileProblem(csr_file, exc.strerror or "cannot read") from exc
    policy = CsrPolicy(allowed_hosts=allowed, key_types=allowed_key_types(key_types))
    signed = sign_server_csr(
        ca_dir or default_ca_dir(),
        data,
        policy=policy,
        days=days,
        name=name,
        passphrase=read_secret_file(ca_passphrase_file),
        dry_run=dry_run,
    )
    if not dry_run:
        if out is not None:
            atomic_write(out, signed.cert_pem(), mode=0o644)
        if ca_out is not None:
            atomic_write(ca_out, signed.roots_pem, mode=0o644)
    if as_json:
        import json

        click.echo(json.dumps(signed.to_json(), indent=2))
        return
    if out is None and not dry_run:
        click.echo(signed.cert_pem().decode(), nl=False)
        return
    console = make_console(stderr=out is None)
    verb = "Would sign" if dry_run else "Signed"
    cert = signed.certificate
    console.print(
        f"{verb} a {signed.request.key_type.value} server certificate for {', '.join(signed.request.hosts)}"
        f" (serial {cert.serial_number:#x}, valid until {cert.not_valid_after_utc:%Y-%m-%d})",
        markup=False,
    )
    if out is not None and not dry_run:
        console.print(f"  certificate: {out}", markup=False)
    if ca_out is not None and not dry_run:
        console.print(f"  CA certificate(s): {ca_out}", markup=False)


@main.command("csr")
@opt.cluster
@click.option("--host", "hosts", multiple=True, metavar="NAME", help="Also name NAME (repeatable).")
@opt.key_type
@opt.file(
    "--ca-certificate", "The CA's certificate(s): with --if-needed, judge the installed certificate by it."
)
@click.option("--if-needed", is_flag=True, help="Make no CSR while the installed certificate can stay.")
@click.option("--before", default=None, metavar="DURATION", help="With --if-needed: due this long before.")
@opt.file("--out", "Write the CSR here; default: standard output.")
@opt.json_output()
def csr_cmd(
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    hosts: tuple[str, ...],
    key_type: str,
    ca_certificate: Path | None,
    if_needed: bool,
    before: str | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Make the server's key here (kept here, mode 0600) and a CSR for the names secure would certify.

    Sign the CSR where the CA is (`pgbatten ca sign`), then install the certificate here with
    `pgbatten secure --certificate FILE --ca-certificate FILE`.
    """
    from pgbatten.cluster.discover import discover
    from pgbatten.errors import FileProblem, UsageError
    from pgbatten.fleet.request import request_certificate
    from pgbatten.fsutil import atomic_write
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import KeyType

    if if_needed and ca_certificate is None:
        raise UsageError("--if-needed judges the installed certificate by the CA: give --ca-certificate")
    ca_pem = None
    if ca_certificate is not None:
        try:
            ca_pem = ca_certificate.read_bytes()
        except OSError as exc:
            raise FileProblem(ca_certificate, exc.strerror or "cannot read") from exc
    cluster = discover(pgdata=pgdata, cluster=cluster_name, pg_bindir=pg_bindir)
    result = request_certificate(
        cluster,
        hosts=hosts,
        key_type=KeyType.parse(key_type),
        ca_certificate=ca_pem,
        before=parse_duration(before) if before is not None else None,
        force=not if_needed,
    )
    pem = result.csr_pem()
    if out is not None and pem is not None:
        atomic_write(out, pem, mode=0o644)
    if as_json:
        import json

        click.echo(json.dumps(result.to_json(), indent=2))
        return
    console = make_console(stderr=True)
    if not result.needed:
        console.print(f"{cluster.label}: the installed certificate can stay; no CSR made.", markup=False)
        return
    if pem is not None and out is None:
        click.echo(pem.decode(), nl=False)
    verb = "made" if result.key_created else "reused"
    console.print(
        f"{cluster.label}: CSR for {', '.join(result.hosts)} ({result.key_type.value}); key {verb} in"
        f" {result.key_path} (mode 0600, stays here)" + (f"; CSR in {out}" if out is not None else ""),
        markup=False,
        soft_wrap=True,
    )
    for reason in result.reasons:
        console.print(f"  why: {reason}", markup=False)
