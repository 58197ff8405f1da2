"""Targets given the way libpq takes them: ``HOST[:PORT]``, conninfo strings, URIs, services, ``PG*``.

* ``db.example.com``, ``db:5433``, ``[::1]:5432``: as before (:func:`wire.parse_target`).
* ``'host=db port=5587 hostaddr=10.0.0.5'``, ``postgresql://db:5587/app``, ``postgres://…``: parsed by
  libpq itself (:func:`psycopg.conninfo.conninfo_to_dict`), never by hand.
* ``service=prod``: libpq reads the service file (``PGSERVICEFILE``, ``PGSYSCONFDIR/pg_service.conf``,
  ``~/.pg_service.conf``) when asked for its defaults with that service named; explicit keywords win.
* No target at all: ``PGHOST``/``PGHOSTADDR``/``PGPORT``/``PGSERVICE``, the way libpq fills them.

``host=a,b`` fans out to one target per host (``port`` and ``hostaddr`` lists pair up as in libpq);
``hostaddr`` is where to connect while ``host`` stays the name verified; ``sslrootcert``, ``sslcrl`` and
``sslcrldir`` travel with the target and act like ``--ca``/``--crl`` for it. A conninfo or URI missing a
host or port takes it from ``PGHOST``/``PGPORT`` as libpq would, else port 5432; Unix-domain socket
directories carry no TLS and are refused.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from pgbatten.errors import UsageError
from pgbatten.probe.wire import DEFAULT_PORT, Target, is_ip_literal, parse_target, valid_host_name

_URI_PREFIXES = ("postgresql://", "postgres://")
_TARGET_KEYS = ("host", "hostaddr", "port", "sslrootcert", "sslcrl", "sslcrldir")
_ENV_LOCK = threading.Lock()


def is_conninfo(text: str) -> bool:
    """Whether ``text`` is a libpq connection string or URI rather than ``HOST[:PORT]``."""
    stripped = text.strip()
    return stripped.startswith(_URI_PREFIXES) or "=" in stripped


def _libpq_parse(text: str) -> dict[str, str]:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parsed = conninfo_to_dict(text)
    except ProgrammingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "not a connection string"
        raise UsageError(f"invalid target {text!r}: {reason}") from None
    return {k: str(v) for k, v in parsed.items() if v is not None}


def libpq_defaults(environ: Mapping[str, str], service: str | None = None) -> dict[str, str]:
    """What libpq fills in from ``environ`` (``PG*``) and, with ``service``, from the service file.

    libpq's ``PQconndefaults`` reads both; it looks at the process environment, so the call runs with
    ``environ`` (and ``PGSERVICE``) put there for its duration, under a lock.
    """
    from psycopg import pq

    wanted = dict(environ)
    if service is not None:
        wanted["PGSERVICE"] = service
    with _ENV_LOCK:
        saved = {k: v for k, v in os.environ.items() if k.startswith("PG")}
        try:
            for key in saved:
                del os.environ[key]
            os.environ.update({k: v for k, v in wanted.items() if k.startswith("PG")})
            options = pq.Conninfo.get_defaults()
        finally:
            for key in [k for k in os.environ if k.startswith("PG")]:
                del os.environ[key]
            os.environ.update(saved)
    return {o.keyword.decode(): o.val.decode() for o in options if o.val is not None}


def _service_values(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    without = {k: v for k, v in environ.items() if k != "PGSERVICE"}
    base = libpq_defaults(without)
    with_service = libpq_defaults(without, name)
    found = {k: v for k, v in with_service.items() if k in _TARGET_KEYS and base.get(k) != v}
    if not found:
        raise UsageError(
            f"service {name!r} not found, or it names no host: looked in PGSERVICEFILE, "
            "PGSYSCONFDIR/pg_service.conf and ~/.pg_service.conf"
        )
    return found


def _split(value: str | None) -> list[str]:
    return [] if value is None else value.split(",")


def _port(text: str, original: str) -> int:
    if not text:
        return DEFAULT_PORT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid target {original!r}: port {text!r} is not a port number")
    return int(text)


def _check_host(host: str, original: str, *, resolved: bool = True) -> str:
    """``host`` as a target may carry it. With ``resolved`` False (a ``hostaddr`` gives the address) libpq
    never looks the name up, only compares it with the certificate: any text goes, as in libpq."""
    if host.startswith("/") or host.startswith("@"):
        if not resolved:
            return host
        raise UsageError(
            f"invalid target {original!r}: {host!r} is a Unix-domain socket, which carries no TLS; "
            "give a TCP host name or address"
        )
    if resolved and not (is_ip_literal(host) or valid_host_name(host)):
        raise UsageError(f"invalid target {original!r}: {host!r} is not a valid host name")
    return host


def targets_from_params(params: Mapping[str, str], original: str) -> list[Target]:
    """One :class:`Target` per host of a parsed connection string (libpq's pairing of the lists)."""
    hosts = _split(params.get("host"))
    addrs = _split(params.get("hostaddr"))
    ports = _split(params.get("port"))
    if not hosts and not addrs:
        raise UsageError(f"invalid target {original!r}: no host (give host=, hostaddr= or set PGHOST)")
    count = max(len(hosts), len(addrs))
    if hosts and addrs and len(hosts) != len(addrs):
        raise UsageError(
            f"invalid target {original!r}: {len(hosts)} host names but {len(addrs)} hostaddr values"
        )
    if len(ports) not in (0, 1, count):
        raise UsageError(f"invalid target {original!r}: {len(ports)} port values for {count} hosts")
    out: list[Target] = []
    for i in range(count):
        addr = addrs[i] if addrs else ""
        host = hosts[i] if hosts else ""
        if addr and not is_ip_literal(addr):
            raise UsageError(f"invalid target {original!r}: hostaddr {addr!r} is not an IP address")
        if not host and not addr:
            raise UsageError(f"invalid target {original!r}: host {i + 1} of the list is empty")
        name = _check_host(host, original, resolved=not addr) if host else addr
        port_text = ports[0] if len(ports) == 1 else (ports[i] if ports else "")
        out.append(
            Target(
                name,
                _port(port_text, original),
                hostaddr=addr or None,
                sslrootcert=params.get("sslrootcert") or None,
                sslcrl=params.get("sslcrl") or None,
                sslcrldir=params.get("sslcrldir") or None,
                # hostaddr alone: libpq connects there but has no name to verify.
                host_name_given=bool(host),
            )
        )
    return out


def parse_target_text(text: str, *, environ: Mapping[str, str] | None = None) -> list[Target]:
    """Every target one argument (or targets-file line) names. :class:`UsageError` for bad input."""
    env = os.environ if environ is None else environ
    if not is_conninfo(text):
        return [parse_target(text)]
    params = _libpq_parse(text.strip())
    if "service" in params:
        params = {**_service_values(params["service"], env), **params}
    # Each keyword the string leaves out comes from its variable, as libpq fills them: PGHOST names the
    # server even when the string gives only hostaddr.
    for keyword, variable in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR"), ("port", "PGPORT")):
        if keyword not in params and env.get(variable):
            params[keyword] = env[variable]
    return targets_from_params(params, text.strip())


def targets_from_environment(environ: Mapping[str, str] | None = None) -> list[Target]:
    """The target libpq would connect to with no connection string: ``PGSERVICE``, ``PGHOST``, ``PGPORT``.

    Empty when none of them is set.
    """
    env = os.environ if environ is None else environ
    if not any(env.get(v) for v in ("PGHOST", "PGHOSTADDR", "PGSERVICE")):
        return []
    params: dict[str, str] = {}
    if env.get("PGSERVICE"):
        params.update(_service_values(env["PGSERVICE"], env))
    # As libpq: the service's values first, the variables only for what it leaves out.
    for keyword, variable in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR"), ("port", "PGPORT")):
        if keyword not in params and env.get(variable):
            params[keyword] = env[variable]
    return targets_from_params(params, "the PG* environment")


__all__ = [
    "is_conninfo",
    "libpq_defaults",
    "parse_target_text",
    "targets_from_environment",
    "targets_from_params",
]
