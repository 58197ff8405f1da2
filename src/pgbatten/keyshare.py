"""Key-exchange groups at both ends of a TLS 1.3 handshake with PostgreSQL, and the client setting that saves
a round trip. Pure.

A TLS 1.3 client guesses which group the server will take and sends a key share for it in its ClientHello;
if the server does not take that group it answers with a HelloRetryRequest and the client starts again: one
more round trip on every connection. OpenSSL clients (libpq, psql, psycopg, Npgsql on Linux, node-postgres)
send an X25519 share first (OpenSSL 3.5 also a post-quantum X25519MLKEM768 one).

* PostgreSQL 18 takes a list (``ssl_groups``): X25519 first, P-256 second, so every usual client share is
  taken as it is.
* Through PostgreSQL 17 the server takes exactly one group (``ssl_ecdh_curve``), and it must be an EC curve:
  ``ssl_ecdh_curve = 'X25519'`` is refused by PostgreSQL 15 (OpenSSL 3.0) and 17 (OpenSSL 3.5) alike
  ("ECDH: could not create key": a fatal error at start, the old TLS setup kept on reload). The one group
  every TLS client speaks is P-256, so that is the server's group, and the round trip is saved on the
  client's side: a key share for P-256 first.

libpq has no connection parameter for groups, but it lets OpenSSL read its configuration file, which
``OPENSSL_CONF`` names: :func:`client_openssl_conf` is that file. It changes every TLS connection of the
process that loads it, not only libpq's, hence opt-in, and meant for the environment of the program that
talks to PostgreSQL (psql, a service), never a login shell's.
"""

from __future__ import annotations

SERVER_CURVE_UP_TO_17 = "prime256v1"
"""``ssl_ecdh_curve`` through PostgreSQL 17: the single group the server takes."""

SERVER_GROUPS_18 = "X25519:prime256v1"
"""``ssl_groups`` from PostgreSQL 18: X25519 first, so an OpenSSL or Java client's first share is taken."""

CLIENT_GROUPS = "P-256:X25519:P-384:X448"
"""The client's group preference in the OpenSSL configuration: the share goes to the first one (P-256), which
every PostgreSQL server pgbatten configures takes; the others stay on offer for other servers. Only names
known to every OpenSSL from 1.1.1 on, since a name it does not know would make it refuse the file."""

OPENSSL_CONF_NAME = "pgbatten-openssl.cnf"
"""File name of the client configuration in bundles."""


def client_openssl_conf() -> str:
    """An OpenSSL configuration that makes a client send its TLS 1.3 key share for P-256 first.

    Everything else stays at OpenSSL's defaults, except that, as Debian's own configuration does, it keeps
    TLS 1.2 as the lowest version and security level 2 (a file named by ``OPENSSL_CONF`` replaces the
    system's configuration for that process; it does not add to it).
    """
    return f"""\
# pgbatten: OpenSSL settings for PostgreSQL clients (libpq, psql, psycopg...) -- opt-in.
#
# A PostgreSQL server up to version 17 takes one key-exchange group, P-256 (ssl_ecdh_curve = prime256v1),
# while OpenSSL clients send their TLS 1.3 key share for X25519 first: the server then asks again
# (HelloRetryRequest), one more network round trip on every connection. With this file the first key
# share is for P-256 and the handshake needs no retry.
#
# Load it only into the program that talks to PostgreSQL, e.g.
#     OPENSSL_CONF=/path/to/{OPENSSL_CONF_NAME} psql "..."
# or Environment=OPENSSL_CONF=... in that program's service unit. It replaces the system's OpenSSL
# configuration for that program (so any provider or policy set there is not loaded) and changes every
# TLS connection the program makes, not only PostgreSQL's: do not put it in a login shell's profile.

openssl_conf = pgbatten_init

[pgbatten_init]
ssl_conf = pgbatten_ssl

[pgbatten_ssl]
system_default = pgbatten_tls

[pgbatten_tls]
Groups = {CLIENT_GROUPS}
MinProtocol = TLSv1.2
CipherString = DEFAULT:@SECLEVEL=2
"""


__all__ = [
    "CLIENT_GROUPS",
    "OPENSSL_CONF_NAME",
    "SERVER_CURVE_UP_TO_17",
    "SERVER_GROUPS_18",
    "client_openssl_conf",
]
