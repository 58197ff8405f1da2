"""A client bundle: everything one PostgreSQL user needs to connect with ``sslmode=verify-full`` and a cert.

The bundle directory holds the certificate and key in the formats libpq, PgJDBC, Npgsql, node-postgres and
psycopg read, the CA certificate, and an ``INSTALL.md`` with ready-to-paste settings. The PKCS#12 password
is deliberately not written into the bundle: hand it over by another channel.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pgbatten import libpq
from pgbatten.errors import FileProblem, PKIError, UsageError
from pgbatten.fsutil import atomic_write
from pgbatten.keyshare import OPENSSL_CONF_NAME, client_openssl_conf
from pgbatten.pki.authority import IssuedCertificate
from pgbatten.pki.certbuild import check_role_name
from pgbatten.pki.names import classify_host

CERT_FILE = "postgresql.crt"
KEY_FILE = "postgresql.key"
ROOT_FILE = "root.crt"
PK8_FILE = "postgresql.pk8"
P12_FILE = "postgresql.p12"
INSTALL_FILE = "INSTALL.md"
OPENSSL_CONF_FILE = OPENSSL_CONF_NAME

# Placeholder for the absolute folder in driver settings: drivers, unlike libpq's defaults, do not expand ~.
_UNIX_DIR = "/home/you/.postgresql"
_WINDOWS_DIR = r"%APPDATA%\postgresql"


@dataclass(frozen=True)
class ClientBundle:
    """Where ``write_client_bundle`` put each file."""

    directory: Path
    user: str

    @property
    def cert_path(self) -> Path:
        """Client certificate (PEM, with any intermediates)."""
        return self.directory / CERT_FILE

    @property
    def key_path(self) -> Path:
        """Client key, unencrypted PKCS#8 PEM, 0600."""
        return self.directory / KEY_FILE

    @property
    def root_cert_path(self) -> Path:
        """The CA certificate to verify the server with (``sslrootcert``)."""
        return self.directory / ROOT_FILE

    @property
    def pk8_path(self) -> Path:
        """Client key as unencrypted PKCS#8 DER for PgJDBC, 0600."""
        return self.directory / PK8_FILE

    @property
    def p12_path(self) -> Path:
        """Key, certificate and CA as password-protected PKCS#12, 0600."""
        return self.directory / P12_FILE

    @property
    def openssl_conf_path(self) -> Path:
        """The opt-in client OpenSSL configuration (P-256 key share first), for ``OPENSSL_CONF``."""
        return self.directory / OPENSSL_CONF_FILE

    @property
    def install_md_path(self) -> Path:
        """Instructions and ready connection settings."""
        return self.directory / INSTALL_FILE


def generate_password() -> str:
    """A random URL-safe password of 24 characters (144 bits) for the PKCS#12 file."""
    return secrets.token_urlsafe(18)


def write_client_bundle(
    out_dir: Path,
    issued: IssuedCertificate,
    ca_cert: x509.Certificate,
    *,
    p12_password: bytes,
    server_host: str,
    server_port: int = 5432,
    dbname: str = "postgres",
    force: bool = False,
    direct_ssl: bool = False,
) -> ClientBundle:
    """Write a complete bundle into ``out_dir`` (mode 0700), all at once or not at all.

    Files are written into a temporary sibling directory which is then renamed into place, so a failure
    never leaves half a bundle. An existing non-empty ``out_dir`` is refused (``FileProblem``) unless
    ``force``; with ``force`` it is replaced whole.
    """
    user = _client_user(issued.certificate)
    install_md = render_install_md(user, server_host, server_port, dbname, direct_ssl=direct_ssl)
    if not p12_password:
        raise UsageError("the PKCS#12 password must not be empty")
    out_dir = Path(out_dir)
    _check_target(out_dir, force)

    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise FileProblem(parent, f"cannot create the bundle here: {exc.strerror}") from exc
    try:
        atomic_write(staging / CERT_FILE, issued.cert_pem(), mode=0o644)
        atomic_write(staging / KEY_FILE, issued.key_pem(), mode=0o600)
        atomic_write(staging / ROOT_FILE, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        atomic_write(staging / PK8_FILE, issued.key_pk8_der(), mode=0o600)
        atomic_write(staging / P12_FILE, issued.pkcs12(p12_password, ca_cert), mode=0o600)
        atomic_write(staging / OPENSSL_CONF_FILE, client_openssl_conf().encode(), mode=0o644)
        atomic_write(staging / INSTALL_FILE, install_md.encode("utf-8"), mode=0o644)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ClientBundle(directory=out_dir, user=user)


def _client_user(certificate: x509.Certificate) -> str:
    cns = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or not isinstance(cns[0].value, str):
        raise PKIError("the client certificate has no common name (the PostgreSQL user)")
    return cns[0].value


def _check_target(out_dir: Path, force: bool) -> None:
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise FileProblem(out_dir, "exists and is not a directory")
    if force:
        return
    if any(out_dir.iterdir()):
        raise FileProblem(out_dir, "already exists and is not empty; refusing to overwrite it (--force)")


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    old: Path | None = None
    try:
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            # rename(2) replaces an empty directory, which mkdtemp just made for us.
            out_dir.rename(old)
        try:
            staging.rename(out_dir)
        except OSError:
            if old is not None:
                old.rename(out_dir)
                old = None
            raise
    except OSError as exc:
        raise FileProblem(out_dir, f"cannot put the bundle in place: {exc.strerror}") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- INSTALL.md -------------------------------------------------------------------------------------------


def render_install_md(
    user: str, server_host: str, port: int = 5432, dbname: str = "postgres", *, direct_ssl: bool = False
) -> str:
    """The bundle's INSTALL.md: where the files go and ready ``sslmode=verify-full`` settings per driver.

    ``direct_ssl``: the server is PostgreSQL 17 or later, so a libpq 17+ client may add
    ``sslnegotiation=direct``.
    """
    check_role_name(user)
    host = classify_host(server_host)
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid port {port}: must be 1 to 65535")
    if not dbname or any(ord(ch) < 32 for ch in dbname):
        raise UsageError(f"invalid database name {dbname!r}")
    host_text = str(host)
    is_ip = not isinstance(host, str)
    url_host = f"[{host_text}]" if isinstance(host, ipaddress.IPv6Address) else host_text

    # Escaped by libpq's rules (pgbatten.libpq, psycopg's make_conninfo), never by hand: a role or database
    # name with a space or a quote must paste as it is.
    settings = {
        "host": host_text,
        "port": str(port),
        "dbname": dbname,
        "user": user,
        "sslmode": "verify-full",
    }
    conninfo = libpq.conninfo(settings)
    explicit = libpq.conninfo(
        {
            **settings,
            "sslrootcert": f"{_UNIX_DIR}/{ROOT_FILE}",
            "sslcert": f"{_UNIX_DIR}/{CERT_FILE}",
            "sslkey": f"{_UNIX_DIR}/{KEY_FILE}",
        }
    )
    jdbc_base = (
        f"jdbc:postgresql://{url_host}:{port}/{quote(dbname, safe='')}"
        f"?user={quote(user, safe='')}&sslmode=verify-full&sslrootcert={_UNIX_DIR}/{ROOT_FILE}"
    )
    npgsql = ";".join(
        f"{k}={_npgsql_value(v)}"
        for k, v in [
            ("Host", host_text),
            ("Port", str(port)),
            ("Database", dbname),
            ("Username", user),
            ("SSL Mode", "VerifyFull"),
            ("Root Certificate", f"{_UNIX_DIR}/{ROOT_FILE}"),
            ("SSL Certificate", f"{_UNIX_DIR}/{CERT_FILE}"),
            ("SSL Key", f"{_UNIX_DIR}/{KEY_FILE}"),
        ]
    )
    js = json.dumps
    # Node refuses an IP address as TLS SNI servername; it then checks the IP SAN against `host` itself.
    servername = "" if is_ip else f"\n    servername: {js(host_text)},"
    service_name = re.sub(r"[^A-Za-z0-9_.]+", "-", f"{host_text}-{dbname}").strip("-") or "pgbatten"
    ip_note = (
        "\n> The server is named by IP address: libpq matches IP addresses in certificates from "
        "PostgreSQL 14 on, so use a PostgreSQL 14 or newer client.\n"
        if is_ip
        else ""
    )

    return f"""# Connecting to PostgreSQL at {host_text} as {user}

This bundle holds a client certificate for the PostgreSQL user `{user}` and the CA certificate that
proves the server is really `{host_text}`. Every setting below uses `sslmode=verify-full`: the
connection is encrypted, the server's certificate must be signed by this CA, and it must name
`{host_text}`. Never fall back to `require` or `prefer`; they accept an impostor.
{ip_note}
| File | What it is |
|------|------------|
| `{CERT_FILE}` | your certificate (PEM) |
| `{KEY_FILE}` | your private key (PEM, unencrypted): keep it secret |
| `{ROOT_FILE}` | the CA certificate the server's certificate is checked against |
| `{PK8_FILE}` | your private key as PKCS#8 DER, for Java (PgJDBC) |
| `{P12_FILE}` | key, certificate and CA as PKCS#12 for Java, .NET, Windows (password given separately) |
| `{OPENSSL_CONF_FILE}` | optional: OpenSSL settings that save a round trip per connection (see the end) |

## Where the files go

Put them where libpq (psql, psycopg, and every libpq-based driver) looks by default; then no paths
are needed at all.

Linux and macOS:

```sh
mkdir -p ~/.postgresql
cp {CERT_FILE} {KEY_FILE} {ROOT_FILE} {PK8_FILE} {P12_FILE} ~/.postgresql/
chmod 700 ~/.postgresql
chmod 600 ~/.postgresql/{KEY_FILE} ~/.postgresql/{PK8_FILE} ~/.postgresql/{P12_FILE}
```

libpq refuses a key file that others can read, so the `chmod 600` is required.

Windows: copy the same files to `{_WINDOWS_DIR}\\` (for example
`C:\\Users\\you\\AppData\\Roaming\\postgresql\\{CERT_FILE}`, `...\\{KEY_FILE}`, `...\\{ROOT_FILE}`).

Drivers other than libpq do not look there by themselves and do not expand `~`: in the settings below,
replace `{_UNIX_DIR}` with the absolute path of that folder (on Windows for example
`C:/Users/you/AppData/Roaming/postgresql`; Java, .NET and Node accept forward slashes).

## psql and libpq

```sh
psql {shlex.quote(conninfo)}
```

The connection string, with the files in the default place:

```
{conninfo}
```

or with explicit paths:

```
{explicit}
```
{_direct_ssl_section(conninfo) if direct_ssl else ""}
## ~/.pg_service.conf

On Windows this file is `{_WINDOWS_DIR}\\.pg_service.conf`.

```ini
[{service_name}]
host={host_text}
port={port}
dbname={dbname}
user={user}
sslmode=verify-full
```

Then `psql service={service_name}` (or `PGSERVICE={service_name}`).

## Java (PgJDBC)

With the PKCS#8 key:

```
{jdbc_base}&sslcert={_UNIX_DIR}/{CERT_FILE}&sslkey={_UNIX_DIR}/{PK8_FILE}
```

With the PKCS#12 file (it carries the certificate too; URL-encode the password if it has special
characters):

```
{jdbc_base}&sslkey={_UNIX_DIR}/{P12_FILE}&sslpassword=<PKCS#12 password>
```

The default `sslfactory` (`org.postgresql.ssl.LibPQFactory`) reads these files; do not set
`sslfactory=org.postgresql.ssl.NonValidatingFactory`, which disables verification.

## .NET (Npgsql)

```
{npgsql}
```

## Node.js (node-postgres)

```js
const fs = require("fs");
const {{ Client }} = require("pg");

const client = new Client({{
  host: {js(host_text)},
  port: {port},
  database: {js(dbname)},
  user: {js(user)},
  ssl: {{
    ca: fs.readFileSync({js(f"{_UNIX_DIR}/{ROOT_FILE}")}).toString(),
    cert: fs.readFileSync({js(f"{_UNIX_DIR}/{CERT_FILE}")}).toString(),
    key: fs.readFileSync({js(f"{_UNIX_DIR}/{KEY_FILE}")}).toString(),
    rejectUnauthorized: true,{servername}
  }},
}});
```

Do not also put `sslmode` in a `connectionString`: it would replace this `ssl` object.

## Python (psycopg 3)

```python
import psycopg

conn = psycopg.connect(
    host={js(host_text)},
    port={port},
    dbname={js(dbname)},
    user={js(user)},
    sslmode="verify-full",
    sslrootcert={js(f"{_UNIX_DIR}/{ROOT_FILE}")},
    sslcert={js(f"{_UNIX_DIR}/{CERT_FILE}")},
    sslkey={js(f"{_UNIX_DIR}/{KEY_FILE}")},
)
```

## One round trip fewer per connection (optional)

A PostgreSQL server up to version 17 takes one key-exchange group, P-256, while OpenSSL-based clients
(psql, libpq, psycopg, node-postgres) send their TLS 1.3 key share for X25519 first: the server then asks
again (a HelloRetryRequest), and every new connection waits one more network round trip. From PostgreSQL
18 on the server takes X25519 and nothing here is needed.

- libpq, psql, psycopg and other OpenSSL-based programs: start them with `OPENSSL_CONF` naming
  `{OPENSSL_CONF_FILE}` from this bundle, which puts P-256 first:

  ```sh
  cp {OPENSSL_CONF_FILE} ~/.postgresql/
  OPENSSL_CONF=~/.postgresql/{OPENSSL_CONF_FILE} psql {shlex.quote(conninfo)}
  ```

  For a service, set it in that service's environment (systemd: `Environment=OPENSSL_CONF=...`). The file
  becomes the whole OpenSSL configuration of that program: every TLS connection it makes, not only to
  PostgreSQL, offers P-256 first, and the system's own OpenSSL configuration is not read for it (it keeps
  TLS 1.2 as the lowest version and security level 2, as Debian's does). So set it per program, never in a
  login shell's profile.
- node-postgres: add `ecdhCurve: "P-256:X25519",` to the `ssl` object above; it changes only this
  connection.
- Java (PgJDBC) needs nothing: it sends key shares for both X25519 and P-256.
"""


def _npgsql_value(value: str) -> str:
    # ADO.NET connection strings: double-quote values with separators or quotes, doubling inner quotes.
    if value and not re.search(r"[;=\"'{}]|^\s|\s$", value):
        return value
    escaped = value.replace('"', '""')
    return f'"{escaped}"'


def _direct_ssl_section(conninfo: str) -> str:
    return f"""
The server is PostgreSQL 17 or later: with libpq 17 or newer on this side (`psql --version` says 17 or
more; psycopg's binary package brings its own) it can start TLS at once, without the plaintext
SSLRequest round trip first:

```
{conninfo} sslnegotiation=direct
```

libpq 16 and older refuse `sslnegotiation` as an unknown option: leave it out there.
"""
