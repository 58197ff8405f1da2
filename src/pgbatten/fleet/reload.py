"""A reload that never restarts: the handler a fleet's play notifies instead of "restart postgresql".

pgbatten's own changes reload inside their transaction (they must, to prove and roll back). Other tasks of
the same play (a template of postgresql.conf, a pg_hba rule) notify this handler; it reloads, waits until
new sessions run on the new files, and reports the lines PostgreSQL could not apply, which it keeps at their
old values: a bad line must stop the rollout, not sit unnoticed until the next restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgbatten.cluster.discover import Cluster
from pgbatten.errors import ValidationError
from pgbatten.secure.apply import reload_and_wait


@dataclass(frozen=True)
class Reloaded:
    cluster: str
    conf_load_time: str

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "conf_load_time": self.conf_load_time}


def reload_cluster(cluster: Cluster) -> Reloaded:
    """Reload ``cluster`` (never a restart) and refuse what PostgreSQL could not apply."""
    cluster.require_running()
    sql = cluster.sql()
    reload_and_wait(sql)
    bad = sql.query(
        "SELECT sourcefile, sourceline, name, error FROM pg_file_settings WHERE error IS NOT NULL"
        " UNION ALL SELECT current_setting('hba_file'), line_number, 'pg_hba.conf', error"
        " FROM pg_hba_file_rules"
        " WHERE error IS NOT NULL"
    )
    if bad:
        source, line, name, error = bad[0]
        raise ValidationError(
            f"reloaded, but PostgreSQL did not apply {name} at {source}:{line}: {error}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
        )
    return Reloaded(cluster.label, sql.value("SELECT pg_conf_load_time()") or "")
