"""The ``pgbatten`` command: a thin layer of argument parsing and printing over the library."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from pgbatten import __version__
from pgbatten.errors import PgBattenError

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes: 0 success, 1 a check found something of high severity, 2 an expected error (one line on
# stderr), 3 a target was unreachable, 70 an internal error, 130 interrupted.
EXIT_ERROR = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def make_console(*, stderr: bool = False) -> Console:
    # rich already honours NO_COLOR and plain output when not on a terminal; keep lines unwrapped for pipes.
    return Console(stderr=stderr, highlight=False, soft_wrap=not sys.stdout.isatty())


class PgBattenGroup(click.Group):
    """Turns every expected failure into one line on stderr; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgBattenError as exc:
            if _debug(ctx):
                raise
            click.echo(f"pgbatten: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("pgbatten: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(
                f"pgbatten: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("PGBATTEN_DEBUG") == "1"


@click.group(cls=PgBattenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="pgbatten")
def main(debug: bool) -> None:
    """Turn a PostgreSQL server into a TLS-only server, hand clients what they need, and prove it."""


def ca_dir_option(func: F) -> F:
    return click.option(
        "--ca-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="PGBATTEN_CA_DIR",
        default=None,
        help="CA directory (default: $PGBATTEN_CA_DIR or ~/.local/share/pgbatten/ca).",
    )(func)


def passphrase_option(func: F) -> F:
    return click.option(
        "--ca-passphrase-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="File holding the CA key's passphrase (first line).",
    )(func)


def read_secret_file(path: Path | None) -> bytes | None:
    if path is None:
        return None
    from pgbatten.errors import FileProblem

    try:
        first = path.read_bytes().splitlines()
    except OSError as exc:
        raise FileProblem(path, exc.strerror or "cannot read") from exc
    if not first or not first[0]:
        raise FileProblem(path, "is empty")
    return first[0]


def cluster_options(func: F) -> F:
    func = click.option(
        "--cluster",
        "cluster_name",
        metavar="VERSION/NAME",
        default=None,
        help="A Debian/Ubuntu cluster, e.g. 15/main (config in /etc/postgresql/VERSION/NAME).",
    )(func)
    return click.option(
        "--pgdata",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The cluster's data directory.",
    )(func)


def key_type_option(func: F) -> F:
    return click.option(
        "--key-type",
        default="ecdsa-p256",
        show_default=True,
        metavar="TYPE",
        help="ecdsa-p256 (fastest handshakes), rsa-2048, rsa-3072 or rsa-4096.",
    )(func)


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
    from pgbatten.pki import CAStore, KeyType, default_ca_dir

    store = CAStore(ca_dir or default_ca_dir())
    authority = store.init(
        key_type=KeyType.parse(key_type),
        passphrase=read_secret_file(ca_passphrase_file),
        common_name=common_name,
        days=days,
    )
    out = make_console()
    out.print(f"Created CA [bold]{common_name}[/] in {store.path}")
    out.print(f"  certificate (hand to clients as sslrootcert): {store.ca_cert_path}")
    out.print(f"  private key (keep secret, mode 0600):          {store.ca_key_path}")
    out.print(f"  valid until {authority.not_after:%Y-%m-%d %H:%M} UTC")


@main.command("check")
@click.argument("targets", nargs=-1, required=True, metavar="HOST[:PORT]...")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="CA certificate(s) a verify-full client would trust (PEM).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per target.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 300), help="Seconds.")
def check_cmd(targets: tuple[str, ...], ca_file: Path | None, as_json: bool, timeout: float) -> None:
    """Check servers from outside, with no credentials: TLS, certificate, plaintext refused.

    Exit status: 0 nothing of high severity, 1 a high or critical finding, 3 a target unreachable.
    """
    from pgbatten.probe import check_target, exit_status, load_ca_file, parse_target
    from pgbatten.report import check_json, print_check

    parsed = [parse_target(t) for t in targets]  # all input is validated before the first connection
    ca = load_ca_file(ca_file) if ca_file else None
    results = [check_target(t, ca=ca, timeout=timeout) for t in parsed]
    if as_json:
        click.echo(check_json(results))
    else:
        out = make_console()
        for result in results:
            print_check(out, result)
    raise SystemExit(exit_status(results))


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
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
def secure_cmd(
    pgdata: Path | None,
    cluster_name: str | None,
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
    cluster = discover(pgdata=pgdata, cluster=cluster_name)
    secure(cluster, options, console=make_console(), confirm=_confirm)


@main.command("demo")
@click.option("--keep", is_flag=True, help="Leave the demo cluster's files behind for inspection.")
def demo_cmd(keep: bool) -> None:
    """Show an eavesdropper reading a plaintext query, secure the server, and show it again."""
    from pgbatten.demo.run import run_demo

    raise SystemExit(run_demo(make_console(), keep=keep))
