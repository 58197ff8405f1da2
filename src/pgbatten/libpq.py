"""The one place that builds the libpq connections pgbatten itself makes.

libpq fills every parameter a connection string leaves out from the environment (``PGSSLMODE``,
``PGSSLCERT``, ``PGSERVICE``…) and from the operator's home directory (``~/.postgresql/postgresql.crt`` is
sent to any server that asks for a client certificate, ``~/.postgresql/root.crt`` silently turns
``sslmode=require`` into ``verify-ca``, ``~/.pgpass`` supplies passwords). A proof that depends on what the
operator's home happens to hold proves nothing, so every connection pgbatten makes for itself (the proofs
of ``secure`` and of revocation, the demo's client) is built here with each of those inputs pinned:

* ``sslcert``/``sslkey`` point at a path that cannot exist (and ``sslcertmode=disable`` where libpq knows
  it) unless a client certificate is meant to be sent;
* ``sslrootcert``/``sslcrl`` likewise, unless given; ``passfile`` is never read;
* ``gssencmode=disable`` (no Kerberos detour before TLS), an ``application_name`` saying who we are;
* any other parameter whose environment variable is set is given its compiled-in default, so ``PG*``
  cannot change a connection of ours.

Values are escaped by libpq's own rules (:func:`psycopg.conninfo.make_conninfo`), never by hand. What the
user hands us as a DSN (``check --dsn``) is theirs: :func:`user_params` parses it with libpq and only adds
what they left out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import psycopg

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

NO_FILE = "/dev/null/pgbatten-none"
"""A path that cannot exist anywhere (its parent is not a directory): libpq treats it as "no such file"."""

APPLICATION_NAME = "pgbatten"


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate and its key, to be sent when the server asks."""

    cert: Path
    key: Path


@cache
def _libpq_options() -> tuple[tuple[str, str | None, str | None], ...]:
    """(keyword, environment variable, compiled default) for every option this libpq knows."""
    from psycopg import pq

    out: list[tuple[str, str | None, str | None]] = []
    for opt in pq.Conninfo.get_defaults():
        keyword = opt.keyword.decode()
        envvar = opt.envvar.decode() if opt.envvar else None
        compiled = opt.compiled.decode() if opt.compiled is not None else None
        out.append((keyword, envvar, compiled))
    return tuple(out)


def libpq_knows(keyword: str) -> bool:
    """Whether the libpq psycopg uses accepts ``keyword`` (``sslcertmode`` from 16, ``sslnegotiation`` 17)."""
    return any(k == keyword for k, _, _ in _libpq_options())


def _shield_environment(params: dict[str, str], environ: Mapping[str, str]) -> None:
    # A PG* variable only matters for a keyword we left out: give such keywords their compiled default, or
    # an empty value (libpq's "not set") where there is none, so the variable is never consulted.
    for keyword, envvar, compiled in _libpq_options():
        if keyword in params or envvar is None or envvar not in environ or keyword == "service":
            continue
        params[keyword] = compiled if compiled is not None else ""


def params(
    *,
    host: str,
    port: int,
    user: str,
    dbname: str = "postgres",
    password: str | None = None,
    hostaddr: str | None = None,
    sslmode: SslMode = "verify-full",
    sslrootcert: Path | str | None = None,
    sslcrl: Path | str | None = None,
    client_certificate: ClientCertificate | None = None,
    connect_timeout: float = 5.0,
    application_name: str = APPLICATION_NAME,
    extra: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every parameter of a connection pgbatten makes for itself, independent of home directory and ``PG*``.

    ``extra`` adds libpq keywords (``channel_binding``, ``sslnegotiation``…) and wins over the pins above.
    ``environ`` is the environment to shield against (default: this process's).
    """
    out: dict[str, str] = {
        "host": host,
        "port": str(port),
        "user": user,
        "dbname": dbname,
        "sslmode": sslmode,
        "sslrootcert": str(sslrootcert) if sslrootcert is not None else NO_FILE,
        "sslcrl": str(sslcrl) if sslcrl is not None else NO_FILE,
        "passfile": NO_FILE,
        "gssencmode": "disable",
        # libpq rounds a fractional timeout down, and 0 would mean "wait forever".
        "connect_timeout": str(max(1, int(connect_timeout))),
        "application_name": application_name,
    }
    if hostaddr is not None:
        out["hostaddr"] = hostaddr
    if password is not None:
        out["password"] = password
    if client_certificate is not None:
        out["sslcert"] = str(client_certificate.cert)
        out["sslkey"] = str(client_certificate.key)
        if libpq_knows("sslcertmode"):
            out["sslcertmode"] = "allow"
    else:
        out["sslcert"] = NO_FILE
        out["sslkey"] = NO_FILE
        if libpq_knows("sslcertmode"):
            out["sslcertmode"] = "disable"
    if extra:
        out.update(extra)
    _shield_environment(out, os.environ if environ is None else environ)
    return out


@contextlib.contextmanager
def _service_hidden() -> Iterator[None]:
    # PGSERVICE is the one variable no connection string can neutralise (an empty service= is looked up
    # too), so it is hidden from libpq while it reads its environment.
    saved = os.environ.pop("PGSERVICE", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PGSERVICE"] = saved


def connect(parameters: Mapping[str, str], **kwargs: Any) -> psycopg.Connection[Any]:
    """``psycopg.connect`` on ``parameters`` (from :func:`params`), ``PGSERVICE`` out of libpq's sight."""
    import psycopg

    with _service_hidden():
        return psycopg.connect(conninfo(parameters), **kwargs)


def conninfo(parameters: Mapping[str, str]) -> str:
    """``parameters`` as a connection string, every value quoted and escaped the way libpq parses it."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo("", **parameters)


def user_params(dsn: str, **defaults: str) -> dict[str, str]:
    """A user's DSN (key=value or URI) parsed by libpq, with ``defaults`` for the keywords it leaves out."""
    from psycopg.conninfo import conninfo_to_dict

    parsed = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    return {**defaults, **parsed}


__all__ = [
    "APPLICATION_NAME",
    "NO_FILE",
    "ClientCertificate",
    "SslMode",
    "connect",
    "conninfo",
    "libpq_knows",
    "params",
    "user_params",
]
