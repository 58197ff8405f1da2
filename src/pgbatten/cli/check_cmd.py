"""`pgbatten check`: the outside check."""

from __future__ import annotations

from pathlib import Path

import click

from pgbatten.cli.app import (
    main,
    make_console,
)


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
