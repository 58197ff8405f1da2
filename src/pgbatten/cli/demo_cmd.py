"""`pgbatten demo`."""

from __future__ import annotations

import click

from pgbatten.cli.app import (
    main,
    make_console,
)


@main.command("demo")
@click.option("--keep", is_flag=True, help="Leave the demo cluster's files behind for inspection.")
def demo_cmd(keep: bool) -> None:
    """Show an eavesdropper reading a plaintext query, secure the server, and show it again."""
    from pgbatten.demo.run import run_demo

    raise SystemExit(run_demo(make_console(), keep=keep))
