"""What the server-side audit reads, as plain frozen rows.

:mod:`pgbatten.audit.collect` fills these from a live server; :mod:`pgbatten.audit.analyze` turns them into
findings without any I/O, so tests can hand-build every situation. ``None`` always means "could not be
read" (missing privilege, older server), never "empty", so the analysis can tell "no md5 passwords" from
"not allowed to look".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HbaRow:
    """One row of ``pg_hba_file_rules``, as the server parsed the file on disk.

    ``rule_number`` is the evaluation order (PostgreSQL 16+ has the column; before, the row order is the
    evaluation order); ``file_name`` is set from PostgreSQL 16, where included files appear too.
    Address keywords (``all``, ``samehost``, ``samenet``) and host names come in ``address``; a CIDR
    address comes as address plus dotted ``netmask``.
    """

    line_number: int
    type: str | None
    database: tuple[str, ...] = ()
    user_name: tuple[str, ...] = ()
    address: str | None = None
    netmask: str | None = None
    auth_method: str | None = None
    options: tuple[str, ...] = ()
    error: str | None = None
    rule_number: int | None = None
    file_name: str | None = None

    @property
    def where(self) -> str:
        """``pg_hba.conf line 3`` or ``/etc/.../extra.conf line 3``."""
        name = self.file_name.rsplit("/", 1)[-1] if self.file_name else "pg_hba.conf"
        return f"{name} line {self.line_number}"

    def text(self) -> str:
        """The rule as a pg_hba.conf line, for messages."""
        if self.type is None:
            return "(unparseable line)"
        parts = [self.type, ",".join(self.database), ",".join(self.user_name)]
        if self.type != "local":
            parts.append(self.address or "")
            if self.netmask:
                parts.append(self.netmask)
        parts.append(self.auth_method or "")
        parts.extend(self.options)
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class RoleRow:
    """A role from ``pg_roles`` (readable by everyone)."""

    name: str
    superuser: bool
    can_login: bool


@dataclass(frozen=True)
class KeyFileStat:
    """``stat`` of the server's private key, taken from this machine when the server is local."""

    path: str
    mode: int
    uid: int
    owner: str
    # The OS user the server runs as: the owner of the data directory.
    server_uid: int | None
    server_owner: str | None


@dataclass(frozen=True)
class ServerFacts:
    """Everything the analysis needs. ``unreadable`` names what the role was not allowed to read."""

    settings: Mapping[str, str]
    hba_rows: tuple[HbaRow, ...] | None = None
    roles: tuple[RoleRow, ...] | None = None
    md5_roles: tuple[str, ...] | None = None
    # Whether ssl_cert_file / ssl_key_file / ssl_ca_file / ssl_crl_file exist, per setting name; a name is
    # absent when it could not be checked.
    files_exist: Mapping[str, bool] = field(default_factory=dict)
    local: bool = False
    key_stat: KeyFileStat | None = None
    key_stat_note: str | None = None
    unreadable: tuple[str, ...] = ()
    server_version_num: int | None = None
