"""One exception hierarchy for everything pgbatten expects to go wrong.

Every error carries the context a user needs to act on it (a file and line, a host and port) and renders as
one line; the CLI prints that line and exits non-zero, with a traceback only under ``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class PgBattenError(Exception):
    """Base of every expected failure. ``str(err)`` is the one-line message shown to the user."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(PgBattenError):
    """Bad input on the command line (an invalid host name, contradictory options)."""


class FileProblem(PgBattenError):
    """A file is missing, unreadable, wrongly protected or cannot be written."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ParseError(PgBattenError):
    """A configuration file that cannot be understood; names the file, the line number and the line."""

    def __init__(self, path: Path | str | None, lineno: int, line: str, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.lineno = lineno
        self.line = line
        self.reason = reason
        where = f"{self.path}:{lineno}" if self.path is not None else f"line {lineno}"
        super().__init__(f"{where}: {reason}: {line.strip()!r}")


class PKIError(PgBattenError):
    """The CA is missing, its key cannot be read (wrong passphrase, bad permissions), or issuing failed."""


class ClusterError(PgBattenError):
    """The PostgreSQL cluster cannot be found, is an unsupported version, or is not in the needed state."""


class ValidationError(PgBattenError):
    """PostgreSQL itself rejected the planned configuration; nothing was applied."""


class VerificationError(PgBattenError):
    """A check after applying a change failed; the change was rolled back."""


class RollbackError(PgBattenError):
    """A rollback could not restore every file; the message names each one and where its backup is."""


class BusyError(PgBattenError):
    """Another pgbatten run holds the lock on the same cluster or CA directory; nothing was changed."""


class ProbeError(PgBattenError):
    """A network probe could not reach or understand a target."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"{host}:{port}: {reason}")
