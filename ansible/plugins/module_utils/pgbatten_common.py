# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""What every pgbatten module shares: finding the library, naming the cluster, and one-line failures.

The modules are thin wrappers: the work is done by the pgbatten library installed in the managed host's own
Python (``ansible_python_interpreter``), exactly as the ``pgbatten`` command does it.
"""

from __future__ import annotations

import traceback
from typing import Any

try:
    import pgbatten  # noqa: F401  (imported to tell whether it is installed)
    from pgbatten.errors import PgBattenError

    PGBATTEN_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the managed host
    PGBATTEN_IMPORT_ERROR = traceback.format_exc()

    class PgBattenError(Exception):  # type: ignore[no-redef]
        """Stand-in so that ``except PgBattenError`` still parses when pgbatten is missing."""


CLUSTER_ARGS: dict[str, dict[str, Any]] = {
    "pgdata": {"type": "path"},
    "cluster": {"type": "str"},
}
"""``pgdata`` (a data directory) or ``cluster`` (Debian's ``VERSION/NAME``, e.g. ``15/main``)."""

CLUSTER_EXCLUSIVE = [("pgdata", "cluster")]
CLUSTER_ONE_OF = [("pgdata", "cluster")]


def require_pgbatten(module: Any) -> None:
    """Fail with one line naming the interpreter when the library is missing there."""
    if PGBATTEN_IMPORT_ERROR is not None:
        import sys

        module.fail_json(
            msg=f"the pgbatten Python library is not installed for {sys.executable} on this host;"
            " install it there (pip install pgbatten) or point ansible_python_interpreter at a Python"
            " that has it",
            exception=PGBATTEN_IMPORT_ERROR,
        )


def discover_cluster(module: Any) -> Any:
    """The cluster the task names, as pgbatten finds it."""
    from pathlib import Path

    from pgbatten.cluster.discover import discover

    params = module.params
    pgdata = params.get("pgdata")
    return discover(pgdata=Path(pgdata) if pgdata else None, cluster=params.get("cluster"))


def cluster_option(module: Any) -> list[str]:
    """How printed pgbatten commands name this cluster again."""
    if module.params.get("cluster"):
        return ["--cluster", module.params["cluster"]]
    return ["--pgdata", str(module.params["pgdata"])]


def fail_on_error(module: Any, exc: BaseException, **facts: Any) -> None:
    """A pgbatten error is the one line the command would print; anything else keeps its traceback."""
    if isinstance(exc, PgBattenError):
        module.fail_json(msg=str(exc), **facts)
    module.fail_json(msg=f"{type(exc).__name__}: {exc}", exception=traceback.format_exc(), **facts)


def pem_bytes(text: str | None) -> bytes | None:
    return text.encode() if text else None
