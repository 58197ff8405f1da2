"""The options several commands share, each spelled once: one name, default, range and help everywhere.

Used as ``@opt.ca_dir`` (the same option everywhere) or ``@opt.timeout("Seconds per proof.")`` (the same
option with a command's own help); the commands' own options stay with the commands.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pgbatten.pki import ClusterRef

F = TypeVar("F", bound=Callable[..., Any])

JSON_HELP = "Print one JSON document (schema in the README)."


def ca_dir(func: F) -> F:
    return click.option(
        "--ca-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="PGBATTEN_CA_DIR",
        default=None,
        help="CA directory (default: $PGBATTEN_CA_DIR or ~/.local/share/pgbatten/ca).",
    )(func)


def ca_passphrase(func: F) -> F:
    return click.option(
        "--ca-passphrase-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="File holding the CA key's passphrase (first line).",
    )(func)


def cluster(func: F) -> F:
    """``--pgdata DIR`` (default ``$PGDATA``, as pg_ctl takes it) or ``--cluster VERSION/NAME``."""

    @functools.wraps(func)
    def with_pgdata_default(*args: Any, pgdata: Path | None, cluster_name: str | None, **kwargs: Any) -> Any:
        if pgdata is None and cluster_name is None and os.environ.get("PGDATA"):
            pgdata = Path(os.environ["PGDATA"])
        return func(*args, pgdata=pgdata, cluster_name=cluster_name, **kwargs)

    wrapped = click.option(
        "--pg-bindir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The cluster's PostgreSQL binaries (default: the running server's own, then PATH, pg_config"
        " and /usr/lib/postgresql/VERSION/bin).",
    )(with_pgdata_default)
    wrapped = click.option(
        "--cluster",
        "cluster_name",
        metavar="VERSION/NAME",
        default=None,
        help="A Debian/Ubuntu cluster, e.g. 15/main (config in /etc/postgresql/VERSION/NAME).",
    )(wrapped)
    return click.option(  # type: ignore[return-value]
        "--pgdata",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="The cluster's data directory (default: $PGDATA unless --cluster is given).",
    )(wrapped)


def clusters(func: F) -> F:
    """Repeatable ``--pgdata DIR`` and ``--cluster VERSION/NAME`` (see :func:`cluster_refs`)."""
    func = click.option(
        "--cluster",
        "cluster_names",
        metavar="VERSION/NAME",
        multiple=True,
        help="A Debian/Ubuntu cluster, e.g. 15/main (repeatable).",
    )(func)
    return click.option(
        "--pgdata",
        "pgdatas",
        type=click.Path(path_type=Path, file_okay=False),
        multiple=True,
        help="A cluster's data directory (repeatable).",
    )(func)


def cluster_refs(pgdatas: tuple[Path, ...], names: tuple[str, ...]) -> list[ClusterRef]:
    """The clusters :func:`clusters` named, as printed commands name them again."""
    from pgbatten.pki import ClusterRef

    refs = [ClusterRef.data_directory(p.expanduser().absolute()) for p in pgdatas]
    refs += [ClusterRef.named(n) for n in names]
    return refs


def key_type(func: F) -> F:
    return click.option(
        "--key-type",
        default="ecdsa-p256",
        show_default=True,
        metavar="TYPE",
        help="ecdsa-p256 (fastest handshakes), rsa-2048, rsa-3072 or rsa-4096.",
    )(func)


def json_output(help_text: str = JSON_HELP) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def timeout(help_text: str = "Seconds.", *, minimum: float = 0.1) -> Callable[[F], F]:
    return click.option(
        "--timeout", default=5.0, show_default=True, type=click.FloatRange(minimum, 300), help=help_text
    )


def lock_wait(what: str) -> Callable[[F], F]:
    """``--lock-wait SECONDS`` for another pgbatten run on the same ``what``."""
    return click.option(
        "--lock-wait",
        default=15.0,
        show_default=True,
        type=click.FloatRange(0, 3600),
        help=f"Seconds to wait for another pgbatten run on the same {what}.",
    )


def crl_days(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--crl-days", default=30, show_default=True, type=click.IntRange(1, 3650), help=help_text
    )


def days(help_text: str | None = None, *, name: str = "--days") -> Callable[[F], F]:
    """A certificate's validity in days (1 to 3650, one year by default)."""
    return click.option(name, default=365, show_default=True, type=click.IntRange(1, 3650), help=help_text)


def yes(help_text: str) -> Callable[[F], F]:
    return click.option("--yes", "-y", is_flag=True, help=help_text)


def dry_run(help_text: str, *, short: bool = False) -> Callable[[F], F]:
    return click.option("--dry-run", *(["-n"] if short else []), is_flag=True, help=help_text)


def file(name: str, help_text: str, *, dest: str | None = None) -> Callable[[F], F]:
    """An optional file (not a directory) to read or write, e.g. ``--out`` or ``--ca-certificate``."""
    return click.option(
        name, *([dest] if dest else []), type=click.Path(path_type=Path, dir_okay=False), default=None,
        help=help_text,
    )  # fmt: skip
