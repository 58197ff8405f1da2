"""SQL as the cluster's owner over its Unix socket, through ``psql``.

We go through psql run as the owner rather than a Python driver because local (peer) authentication is
what every packaged cluster allows its owner, and it is the one door ``secure`` never touches: it works
before, during and after a change to pg_hba.conf, also when pgbatten itself runs as root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pgbatten.cluster.osuser import OsUser, run_as
from pgbatten.errors import ClusterError

# psql prints SQL NULL as this marker so it can be told apart from an empty string.
_NULL = "\x01NULL\x01"
# Fields are split on the ASCII unit separator and records on NUL, neither of which settings contain.
_FS = "\x1f"


@dataclass(frozen=True)
class OwnerSQL:
    """Runs SQL on one running cluster as its OS owner."""

    psql: Path
    socket_dir: Path
    port: int
    owner: OsUser
    dbname: str = "postgres"
    role: str | None = None

    def query(self, sql: str, params: Mapping[str, str] | None = None) -> list[tuple[str | None, ...]]:
        """Run ``sql`` and return its rows as text. ``params`` become psql variables: use ``:'name'``."""
        argv: list[str | Path] = [
            self.psql,
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            _FS,
            "-0",
            "-v",
            "ON_ERROR_STOP=1",
            "-P",
            f"null={_NULL}",
            "-h",
            self.socket_dir,
            "-p",
            str(self.port),
            "-d",
            self.dbname,
        ]
        if self.role:
            argv += ["-U", self.role]
        for name, value in (params or {}).items():
            argv += ["-v", f"{name}={value}"]
        # Feed the statement on stdin: psql only interpolates variables there, not in -c.
        result = run_as(self.owner, argv, input_text=sql, env={"PGCONNECT_TIMEOUT": "10"}, timeout=60)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            message = lines[0] if lines else f"psql exit status {result.returncode}"
            raise ClusterError(f"SQL as {self.owner.name} on port {self.port} failed: {message}")
        rows: list[tuple[str | None, ...]] = []
        # psql ends every record with NUL, so what follows the last NUL is not a record; a record may be
        # empty (one empty-string column) and values may hold newlines.
        for record in result.stdout.split("\0")[:-1]:
            rows.append(tuple(None if f == _NULL else f for f in record.split(_FS)))
        return rows

    def value(self, sql: str, params: Mapping[str, str] | None = None) -> str | None:
        """Run ``sql`` returning exactly one value."""
        rows = self.query(sql, params)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise ClusterError(f"expected one value from {sql.strip()!r}, got {len(rows)} rows")
        return rows[0][0]
