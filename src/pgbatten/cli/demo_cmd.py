"""`pgbatten demo`."""

from __future__ import annotations

import click

from pgbatten.cli.app import main, make_console


@main.command("demo")
@click.option("--keep", is_flag=True, help="Leave the demo cluster's files behind for inspection.")
def demo_cmd(keep: bool) -> None:
    """Show an eavesdropper reading a plaintext query, secure the server, and show it again."""
    from pgbatten.demo.run import run_demo

    # SIGTERM and SIGHUP unwind like Ctrl-C (as for every command, see cli.app), so the demo's cleanup stops
    # its cluster and removes its files on `kill` or `timeout` too, and the exit status says which signal.
    raise SystemExit(run_demo(make_console(), keep=keep))
