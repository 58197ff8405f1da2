"""The ``pgbatten`` command: a thin layer of argument parsing and printing over the library."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgbatten import __version__
from pgbatten.errors import PgBattenError

if TYPE_CHECKING:
    # rich costs ~20 ms to import; `pgbatten --help` and commands that print nothing need none of it.
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes: 0 success, 1 a check found something of high severity, 2 an expected error (one line on
# stderr), 3 a target was unreachable, 70 an internal error, 130 interrupted.
EXIT_ERROR = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
PIPE_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    # rich already honours NO_COLOR and drops colour when not on a terminal. Piped output (logs, grep)
    # gets a wide page rather than rich's 80 columns, so table rows stay on one line; $COLUMNS still wins.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width)


class PgBattenGroup(click.Group):
    """Turns every expected failure into one line on stderr; tracebacks only with --debug.

    Commands are imported when they are run, not when ``pgbatten`` starts: ``lazy`` maps each command name
    to the modules that define it and its one-line help (filled in by ``pgbatten.cli``), so ``pgbatten
    --help`` imports no command module at all and ``pgbatten cert list`` only the one it needs.
    """

    lazy: dict[str, tuple[tuple[str, ...], str]] = {}  # noqa: RUF012 - filled once, by pgbatten.cli

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            for module in self.lazy[cmd_name][0]:
                importlib.import_module(module)
        elif cmd_name in self.lazy and len(self.lazy[cmd_name][0]) > 1:
            # A group extended by several modules (ca init, ca rotate): load them all.
            for module in self.lazy[cmd_name][0]:
                importlib.import_module(module)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max((len(name) for name in self.list_commands(ctx)), default=0)
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is not None:
                rows.append((name, command.get_short_help_str(limit)))
            else:
                # Shortened exactly as click shortens a loaded command's help.
                stand_in = click.Command(name, help=self.lazy[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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
        "--pg-bindir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The cluster's PostgreSQL binaries (default: the running server's own, then PATH, pg_config"
        " and /usr/lib/postgresql/VERSION/bin).",
    )(func)
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
