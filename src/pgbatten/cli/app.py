"""The ``pgbatten`` command: a thin layer of argument parsing and printing over the library.

Shared plumbing for every command: one line on stderr for every expected failure (click's usage errors
included), the exit codes, and the signals: SIGTERM and SIGHUP unwind like Ctrl-C (so a change in progress
is rolled back) and exit 128 + the signal; a closed pipe (``pgbatten check … | head -1``) ends quietly.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from pgbatten import __version__
from pgbatten.errors import PgBattenError

if TYPE_CHECKING:
    # rich costs ~20 ms to import; `pgbatten --help` and commands that print nothing need none of it.
    from rich.console import Console


# Exit codes: 0 success, 1 a check found something of high severity, 2 an expected error (one line on
# stderr, usage errors included), 3 a target was unreachable, 70 an internal error, 130 interrupted
# (Ctrl-C), 128 + N killed by signal N (143 for SIGTERM, 129 for SIGHUP), 141 the output pipe closed.
EXIT_ERROR = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
PIPE_WIDTH = 160


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that it unwinds (and rolls back) like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``Terminated`` for the duration of one command (main thread only)."""
    try:
        previous = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class PipeAwareConsole(Console):
        """rich's console, except that a closed pipe is reported like any other (exit 141, not rich's 1)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    return PipeAwareConsole


def make_console(*, stderr: bool = False) -> Console:
    # rich already honours NO_COLOR and drops colour when not on a terminal. Piped output (logs, grep)
    # gets a wide page rather than rich's 80 columns, so table rows stay on one line; $COLUMNS still wins.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
    return _console_class()(stderr=stderr, highlight=False, width=width)


def error_line(message: str) -> str:
    """``pgbatten: error: …`` on one line, whatever the message holds."""
    return "pgbatten: error: " + " ".join(str(message).split())


def describe_os_error(exc: OSError) -> str:
    """An ``OSError`` nothing caught, as one line naming the path and what to do."""
    from pgbatten.fsutil import describe_os_error as reason

    where = exc.filename if exc.filename is not None else None
    return f"{where}: {reason(exc)}" if where is not None else reason(exc)


def _silence_stdout() -> None:
    # The reader is gone: later writes (and the interpreter's final flush) must not raise again.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


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

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kwargs: Any,
    ) -> Any:
        try:
            with _termination_unwinds():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **kwargs)
        except click.exceptions.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                command = " ".join(["pgbatten", *ctx.command_path.split()[1:]])
                message += f" (see '{command} --help')"
            click.echo(error_line(message), err=True)
            code = EXIT_ERROR
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, Terminated):
                code = 128 + exc.__cause__.signum
            else:
                # click.confirm on Ctrl-C or end of input: nothing was applied.
                click.echo("pgbatten: aborted", err=True)
                code = EXIT_INTERRUPTED
        except Terminated as exc:  # a signal before or after a command ran
            code = 128 + exc.signum
        except OSError as exc:
            if not _is_broken_pipe(exc):
                raise
            _silence_stdout()
            code = EXIT_BROKEN_PIPE
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgBattenError as exc:
            if _debug(ctx):
                raise
            click.echo(error_line(str(exc)), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            if _debug(ctx):
                raise
            if isinstance(exc, Terminated):
                click.echo(f"pgbatten: terminated by signal {exc.signum}", err=True)
                ctx.exit(128 + exc.signum)
            click.echo("pgbatten: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:
            if _is_broken_pipe(exc):
                # Handled here: click's own handler would exit 1, like a finding of `check`.
                _silence_stdout()
                ctx.exit(EXIT_BROKEN_PIPE)
            if _debug(ctx):
                raise
            # A file problem nothing more specific caught (a directory we cannot enter, a read-only mount).
            click.echo(error_line(describe_os_error(exc)), err=True)
            ctx.exit(EXIT_ERROR)
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(
                error_line(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)"),
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


def read_secret_file(path: Path | None) -> bytes | None:
    if path is None:
        return None
    from pgbatten.errors import FileProblem
    from pgbatten.fsutil import describe_os_error as reason

    try:
        first = path.read_bytes().splitlines()
    except OSError as exc:
        raise FileProblem(path, reason(exc)) from exc
    if not first or not first[0]:
        raise FileProblem(path, "is empty")
    return first[0]
