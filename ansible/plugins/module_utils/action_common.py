# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""What the action plugins (run on the control node, in ansible-playbook's own Python) share."""

from __future__ import annotations

import traceback
from typing import Any

from ansible.errors import AnsibleActionFail


def import_pgbatten() -> None:
    """Fail the task with one line when pgbatten is missing where ansible-playbook runs."""
    try:
        import pgbatten  # noqa: F401
    except ImportError as exc:
        import sys

        raise AnsibleActionFail(
            f"the pgbatten Python library is not installed for {sys.executable} on the control node;"
            " install it beside ansible-core (pip install pgbatten ansible-core)"
        ) from exc


def failure(exc: BaseException) -> dict[str, Any]:
    """A pgbatten error as its one line; anything else with its traceback."""
    from pgbatten.errors import PgBattenError

    if isinstance(exc, PgBattenError):
        return {"failed": True, "msg": str(exc)}
    return {"failed": True, "msg": f"{type(exc).__name__}: {exc}", "exception": traceback.format_exc()}
