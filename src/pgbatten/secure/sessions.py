"""Sessions still connected in plaintext over TCP after ``secure``.

A reload never drops a session, which is the point of reloading, but it also means a session that
connected in plaintext before keeps running unencrypted until it ends. ``pg_stat_ssl`` says which; this
module lists them and, when asked, ends them with ``pg_terminate_backend``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pgbatten.cluster.sql import OwnerSQL

# Client backends and WAL senders (replication) connected over TCP, neither TLS nor GSSAPI-encrypted.
_PLAINTEXT = (
    "FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid"
    " LEFT JOIN pg_stat_gssapi g ON g.pid = a.pid"
    " WHERE a.client_addr IS NOT NULL AND NOT s.ssl AND NOT coalesce(g.encrypted, false)"
    " AND a.backend_type IN ('client backend', 'walsender') AND a.pid <> pg_backend_pid()"
)


@dataclass(frozen=True)
class PlaintextSession:
    """One session whose traffic still crosses the network unencrypted."""

    pid: int
    user: str
    database: str
    client: str
    backend_type: str
    backend_start: str
    application_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "user": self.user,
            "database": self.database,
            "client": self.client,
            "backend_type": self.backend_type,
            "backend_start": self.backend_start,
            "application_name": self.application_name,
        }


def plaintext_sessions(sql: OwnerSQL) -> list[PlaintextSession]:
    """Every TCP session without encryption right now."""
    rows = sql.query(
        "SELECT a.pid, coalesce(a.usename::text, ''), coalesce(a.datname::text, ''),"
        " host(a.client_addr) || ':' || a.client_port, a.backend_type,"
        " to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " coalesce(a.application_name, '') " + _PLAINTEXT + " ORDER BY a.backend_start"
    )
    return [
        PlaintextSession(
            int(str(r[0])), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6] or "")
        )
        for r in rows
    ]


def end_sessions(sql: OwnerSQL, sessions: Sequence[PlaintextSession]) -> list[int]:
    """Terminate ``sessions`` if they are still plaintext (a PID may have been reused); the PIDs ended."""
    if not sessions:
        return []
    rows = sql.query(
        "SELECT a.pid FROM (SELECT a.pid "  # noqa: S608 - constant SQL; the PIDs are a psql variable
        + _PLAINTEXT
        + " AND a.pid = ANY (string_to_array(:'pids', ',')::int[])"
        ") a WHERE pg_terminate_backend(a.pid)",
        {"pids": ",".join(str(s.pid) for s in sessions)},
    )
    return [int(str(r[0])) for r in rows]
