"""`pgbatten demo`."""

from __future__ import annotations

import signal
from types import FrameType

import click

from pgbatten.cli.app import main, make_console


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Unwind like Ctrl-C does, so the demo's cleanup stops its cluster and removes its files on
    # `kill` or `timeout` too.
    raise KeyboardInterrupt(f"signal {signum}")


@main.command("demo")
@click.option("--keep", is_flag=True, help="Leave the demo cluster's files behind for inspection.")
def demo_cmd(keep: bool) -> None:
    """Show an eavesdropper reading a plaintext query, secure the server, and show it again."""
    from pgbatten.demo.run import run_demo

    signal.signal(signal.SIGTERM, _terminate)
    raise SystemExit(run_demo(make_console(), keep=keep))
