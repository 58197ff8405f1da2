# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Action plugin: the CA certificate(s) and CRL every server installs, read on the control node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible_collections.pgbatten.tls.plugins.module_utils.action_common import failure, import_pgbatten

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={"ca_dir": {"type": "path", "required": True}})
        import_pgbatten()
        from pgbatten.fleet.sign import server_trust

        try:
            trust = server_trust(Path(args["ca_dir"]))
        except Exception as exc:
            result.update(failure(exc))
            return result
        result.update(changed=False, **trust.to_json())
        return result
