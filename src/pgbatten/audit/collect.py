"""The I/O half of the server-side audit: a few read-only queries over one psycopg connection.

Each query that the role may not run is recorded in ``ServerFacts.unreadable`` and the audit goes on, so a
``pg_monitor`` role gets a partial audit rather than an error.
"""

from __future__ import annotations

import ipaddress
import math
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgbatten.audit.analyze import analyze
from pgbatten.audit.facts import HbaRow, KeyFileStat, RoleRow, ServerFacts
from pgbatten.findings import Finding

__all__ = ["AUDITED_SETTINGS", "ServerAudit", "collect_facts", "server_audit"]

AUDITED_SETTINGS = (
    "ssl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_ecdh_curve",
    "ssl_groups",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload",
    "ssl_library",
    "password_encryption",
    "listen_addresses",
    "port",
    "data_directory",
    "hba_file",
    "server_version",
    "server_version_num",
    "log_connections",
)
_FILE_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file")
# What pg_settings shows a role that may not see a superuser-only setting.
_HIDDEN = "<insufficient privilege>"


@dataclass(frozen=True)
class ServerAudit:
    """The outcome of :func:`server_audit`. ``errors`` holds what went wrong (connection, a failed query)."""

    settings: Mapping[str, str]
    hba_rules: tuple[HbaRow, ...]
    findings: tuple[Finding, ...]
    errors: tuple[str, ...] = ()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _settings(cur: psycopg.Cursor[Any]) -> dict[str, str]:
    cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(AUDITED_SETTINGS),))
    return {str(name): str(value) for name, value in cur.fetchall() if value is not None and value != _HIDDEN}


def _hba_rows(cur: psycopg.Cursor[Any]) -> tuple[HbaRow, ...]:
    # to_jsonb keeps this one query across versions (rule_number and file_name exist from 16 on).
    cur.execute("SELECT to_jsonb(r) FROM pg_hba_file_rules r")
    # The view lists rules in the order the server tries them, included files in place.
    return tuple(_hba_row(row[0]) for row in cur.fetchall())


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _hba_row(r: Mapping[str, Any]) -> HbaRow:
    def text(key: str) -> str | None:
        value = r.get(key)
        return None if value is None else str(value)

    rule_number = r.get("rule_number")
    return HbaRow(
        line_number=int(r.get("line_number") or 0),
        type=text("type"),
        database=_strings(r.get("database")),
        user_name=_strings(r.get("user_name")),
        address=text("address"),
        netmask=text("netmask"),
        auth_method=text("auth_method"),
        options=_strings(r.get("options")),
        error=text("error"),
        rule_number=int(rule_number) if rule_number is not None else None,
        file_name=text("file_name"),
    )


def _is_local_host(host: str | None) -> bool:
    if not host or host.startswith("/") or host.startswith("@") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _postmaster_port(data_dir: Path) -> str | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[3].strip() if len(lines) > 3 else None


def _key_stat(settings: Mapping[str, str], local: bool) -> tuple[KeyFileStat | None, str | None]:
    key = settings.get("ssl_key_file")
    data_dir = settings.get("data_directory")
    if not local:
        return None, "The server is not on this machine (the DSN host is neither a socket nor loopback)."
    if not key or not data_dir:
        return None, "ssl_key_file or data_directory is not visible to this role (pg_read_all_settings)."
    data = Path(data_dir)
    # A loopback port may be forwarded into a container: only trust paths when the data directory here
    # belongs to the very server we are connected to.
    port = _postmaster_port(data)
    if port is None:
        return None, f"{data}/postmaster.pid is not readable here, so the key file was not checked."
    if port != settings.get("port"):
        return None, f"{data} on this machine belongs to a server on port {port}, not the one audited."
    path = Path(key) if Path(key).is_absolute() else data / key
    try:
        st = path.stat()
        server_uid: int | None = data.stat().st_uid
    except OSError as exc:
        return None, f"{path}: {exc.strerror or 'cannot stat'}."
    return (
        KeyFileStat(
            path=str(path),
            mode=st.st_mode,
            uid=st.st_uid,
            owner=_user_name(st.st_uid),
            server_uid=server_uid,
            server_owner=_user_name(server_uid) if server_uid is not None else None,
        ),
        None,
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def collect_facts(conn: psycopg.Connection[Any]) -> tuple[ServerFacts, list[str]]:
    """Read everything the analysis needs; returns the facts and the errors met on the way."""
    errors: list[str] = []
    unreadable: list[str] = []
    with conn.cursor() as cur:
        settings = _settings(cur)
        if "data_directory" not in settings:
            unreadable.append(
                "superuser-only settings such as data_directory and the ssl file paths "
                "(grant pg_read_all_settings)"
            )
        hba: tuple[HbaRow, ...] | None = None
        try:
            hba = _hba_rows(cur)
        except pg_errors.InsufficientPrivilege:
            unreadable.append("pg_hba_file_rules, so pg_hba.conf was not checked")
        except psycopg.Error as exc:
            errors.append(f"pg_hba_file_rules: {_first_line(exc)}")
        cur.execute("SELECT rolname, rolsuper, rolcanlogin FROM pg_roles")
        roles = tuple(RoleRow(str(n), bool(s), bool(c)) for n, s, c in cur.fetchall())
        md5: tuple[str, ...] | None = None
        try:
            cur.execute("SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%' ORDER BY rolname")
            md5 = tuple(str(r[0]) for r in cur.fetchall())
        except pg_errors.InsufficientPrivilege:
            unreadable.append("pg_authid (superuser only), so MD5 password hashes were not looked for")
        files_exist: dict[str, bool] = {}
        for name in _FILE_SETTINGS:
            path = settings.get(name)
            if not path:
                continue
            try:
                # Relative paths resolve against the data directory, as the server does.
                cur.execute("SELECT (pg_stat_file(%s, true)).size IS NOT NULL", (path,))
                row = cur.fetchone()
                files_exist[name] = bool(row and row[0])
            except pg_errors.InsufficientPrivilege:
                break  # same privilege for every file: quietly leave existence unchecked
            except psycopg.Error as exc:
                errors.append(f"pg_stat_file({path}): {_first_line(exc)}")
    local = _is_local_host(conn.info.host)
    key, note = _key_stat(settings, local) if settings.get("ssl") == "on" else (None, None)
    version = settings.get("server_version_num")
    return (
        ServerFacts(
            settings=settings,
            hba_rows=hba,
            roles=roles,
            md5_roles=md5,
            files_exist=files_exist,
            local=local,
            key_stat=key,
            key_stat_note=note,
            unreadable=tuple(unreadable),
            server_version_num=int(version) if version and version.isdigit() else None,
        ),
        errors,
    )


def _failed(reason: str) -> ServerAudit:
    """An audit that read nothing: a high finding, so it can never pass for a clean one."""
    finding = Finding(
        "server-audit-failed",
        "high",
        "The server-side audit (--dsn) could not run",
        f"{reason}. Nothing was read from inside the server, so none of its settings, pg_hba.conf rules or "
        "password hashes were checked.",
        "check the --dsn connection string (host, port, user, password, sslmode) and that the role may log "
        "in, then run pgbatten check again",
    )
    return ServerAudit(MappingProxyType({}), (), (finding,), (reason,))


def _incomplete(errors: list[str]) -> Finding:
    return Finding(
        "server-audit-incomplete",
        "low",
        "Part of the server-side audit failed",
        "; ".join(errors) + ".",
        None,
    )


def server_audit(dsn: str, *, timeout: float = 5.0) -> ServerAudit:
    """Audit the server ``dsn`` points to, from the inside. Never raises for an unreachable server.

    Connects as given (a superuser, or a role with pg_read_all_settings / pg_monitor for a partial audit),
    runs read-only queries with a statement timeout, and analyses what it read. An invalid DSN, a failed
    connection or a failed audit query comes back as the high finding ``server-audit-failed`` with the
    reason in ``errors``; a query that failed while the others ran adds the low ``server-audit-incomplete``.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        return _failed(f"invalid DSN: {_first_line(exc)}")
    extra = {"connect_timeout": str(max(1, math.ceil(timeout))), "application_name": "pgbatten audit"}
    conninfo = make_conninfo(dsn, **{k: v for k, v in extra.items() if k not in params})
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        return _failed(f"cannot connect: {_first_line(exc)}")
    try:
        with conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout * 1000)),))
            facts, errors = collect_facts(conn)
    except psycopg.Error as exc:
        return _failed(f"audit query failed: {_first_line(exc)}")
    findings = analyze(facts)
    if errors:
        findings = (*findings, _incomplete(errors))
    return ServerAudit(
        settings=MappingProxyType(dict(facts.settings)),
        hba_rules=facts.hba_rows or (),
        findings=findings,
        errors=tuple(errors),
    )
