"""Asking PostgreSQL whether the files now on disk would work, before a reload makes them count.

One round trip: pg_hba_file_rules and pg_file_settings say whether the server can parse the new files and
whether each of our values would take effect, and ``pg_read_binary_file`` reads the certificate, key, CA and
CRL files *as the server reads them* (so a file the server user cannot read is caught here). The pair is
then loaded the way PostgreSQL loads it (OpenSSL: the chain file, the key, the check that they belong
together), so a broken pair never costs TCP clients an outage before a rollback.
"""

from __future__ import annotations

import contextlib
import ssl
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509

from pgbatten.cluster.osuser import OsUser
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import ValidationError
from pgbatten.fsutil import atomic_write
from pgbatten.pgconf.guc_values import same_setting_value

# What PostgreSQL reports for a value that parses but cannot be applied by a reload: a setting that needs
# a restart (shared_buffers changed and not yet restarted), or a bad value of a setting that is not ours.
# The reload applies every other value, ours included.
NOT_APPLIED = "setting could not be applied"
_FILE_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file")

__all__ = ["NOT_APPLIED", "check_tls_files", "same_setting", "validate_with_postgres"]


def same_setting(name: str, current: str | None, wanted: str) -> bool:
    """Whether the value PostgreSQL reads for ``name`` means ours (``TRUE`` is ``on``, ``tlsv1.2`` is
    ``TLSv1.2``): PostgreSQL's own comparison, :func:`pgbatten.pgconf.same_setting_value`."""
    return current is not None and same_setting_value(name, current, wanted)


def validate_with_postgres(sql: OwnerSQL, settings: Mapping[str, str], owner: OsUser) -> list[str]:
    """``ValidationError`` unless PostgreSQL can use the files on disk; returns notes about other settings."""
    names = ",".join(settings)
    files = {name: settings[name] for name in _FILE_SETTINGS if settings.get(name)}
    file_union = "".join(
        f" UNION ALL SELECT 'file', '{name}', encode(pg_read_binary_file(:'{name}'), 'base64'), NULL, NULL"
        for name in files
    )
    params = {"names": names, **files}
    rows = sql.query(
        "SELECT 'hba', "  # noqa: S608 - constant SQL: names are ours, values psql variables
        "line_number::text, error, NULL, NULL FROM pg_hba_file_rules WHERE error IS NOT NULL"
        " UNION ALL SELECT 'error', sourcefile, sourceline::text, lower(name), error FROM pg_file_settings"
        " WHERE error IS NOT NULL"
        " UNION ALL SELECT 'applied', lower(name), setting, sourcefile, sourceline::text"
        " FROM pg_file_settings WHERE applied AND lower(name) = ANY (string_to_array(:'names', ','))"
        + file_union,
        params,
    )
    notes: list[str] = []
    bad_hba = [r for r in rows if r[0] == "hba"]
    if settings.get("ssl") == "on":
        # Checked against the running server's ssl = off; the reload turns ssl on before it reads pg_hba.
        bad_hba = [r for r in bad_hba if "SSL is disabled" not in (r[2] or "")]
    if bad_hba:
        raise ValidationError(
            f"PostgreSQL rejects the new pg_hba.conf at line {bad_hba[0][1]}: {bad_hba[0][2]}"
        )
    for _, source, line, name, error in (r for r in rows if r[0] == "error"):
        where = f"{source}:{line}"
        if name is None or name in settings or error != NOT_APPLIED:
            raise ValidationError(f"PostgreSQL rejects {name or 'the file'} at {where}: {error}")
        notes.append(f"{name} at {where} cannot be applied by a reload (it needs a restart); left as it is")
    applied = {str(r[1]): r for r in rows if r[0] == "applied"}
    for name, value in settings.items():
        row = applied.get(name)
        if row is None or not same_setting(name, row[2], value):
            where = f" (PostgreSQL takes {row[2]!r} from {row[3]}:{row[4]})" if row else ""
            raise ValidationError(f"{name} = {value!r} would not take effect{where}")
    contents = {str(r[1]): _b64(r[2]) for r in rows if r[0] == "file"}
    check_tls_files(settings, contents, owner)
    return notes


def _b64(text: str | None) -> bytes:
    import base64

    return base64.b64decode("".join((text or "").split()))


def check_tls_files(settings: Mapping[str, str], contents: Mapping[str, bytes], owner: OsUser) -> None:
    """Load the files as PostgreSQL will: key permissions, the certificate chain with its key, CA, CRL."""
    key_setting = settings.get("ssl_key_file")
    if key_setting:
        _check_key_mode(Path(key_setting), owner)
    cert, key = contents.get("ssl_cert_file"), contents.get("ssl_key_file")
    with tempfile.TemporaryDirectory(prefix="pgbatten-validate-") as tmp:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if cert is not None and key is not None:
            cert_path, key_path = Path(tmp) / "server.crt", Path(tmp) / "server.key"
            atomic_write(cert_path, cert, mode=0o600)
            atomic_write(key_path, key, mode=0o600)
            try:
                # An encrypted key cannot be loaded by a reload without ssl_passphrase_command either.
                context.load_cert_chain(cert_path, key_path, password=lambda: b"")
            except (ssl.SSLError, OSError) as exc:
                raise ValidationError(
                    f"the server certificate {settings.get('ssl_cert_file')} and key {key_setting} cannot be"
                    f" loaded together ({_ssl_reason(exc)}); nothing was reloaded"
                ) from exc
        ca = contents.get("ssl_ca_file")
        if ca is not None:
            try:
                context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise ValidationError(
                    f"ssl_ca_file {settings.get('ssl_ca_file')} cannot be loaded ({_ssl_reason(exc)})"
                ) from exc
    crl = contents.get("ssl_crl_file")
    if crl is not None:
        try:
            x509.load_pem_x509_crl(crl)
        except ValueError as exc:
            raise ValidationError(f"ssl_crl_file {settings.get('ssl_crl_file')} is not a PEM CRL") from exc


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).strip() or type(exc).__name__


def _check_key_mode(path: Path, owner: OsUser) -> None:
    """PostgreSQL's rule: owned by the server user and 0600 (or less), or owned by root and 0640 (or less)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid == owner.uid and mode & 0o077:
            raise ValidationError(f"{path} has mode {mode:04o}; PostgreSQL wants 0600 for its owner's key")
        if st.st_uid == 0 and mode & 0o037:
            raise ValidationError(f"{path} has mode {mode:04o}; PostgreSQL wants 0640 or less for root's key")
        if st.st_uid not in (0, owner.uid):
            raise ValidationError(f"{path} must be owned by {owner.name} or root for PostgreSQL to use it")
