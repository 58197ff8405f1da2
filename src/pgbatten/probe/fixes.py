"""Fix commands with the real data directory, where ``check`` can know it.

The finding catalogue is pure and says :data:`~pgbatten.findings.PGDATA_PLACEHOLDER` for the cluster's data
directory. When the target is a cluster of this machine (:func:`pgbatten.cluster.local.data_dir_serving`),
or the server audit read ``data_directory``, the printed fix names that directory and works when pasted;
otherwise the placeholder stays, and reads as one.
"""

from __future__ import annotations

from dataclasses import replace

from pgbatten.findings import PGDATA_PLACEHOLDER, with_data_dir
from pgbatten.probe.result import CheckResult


def with_known_data_dir(result: CheckResult, data_dir: str | None = None) -> CheckResult:
    """``result`` with its fixes naming ``data_dir``, else the local cluster serving its target, if any."""
    if not any(f.fix and PGDATA_PLACEHOLDER in f.fix for f in result.findings):
        return result
    if data_dir is None:
        from pgbatten.cluster.local import data_dir_serving

        target = result.target
        found = data_dir_serving([target.address], target.port)
        data_dir = str(found) if found is not None else None
    if data_dir is None:
        return result
    return replace(result, findings=tuple(with_data_dir(f, data_dir) for f in result.findings))
