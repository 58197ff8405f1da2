# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Action plugin: check a host's CSR and sign it with the CA on the control node (pgbatten ca sign)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible_collections.pgbatten.tls.plugins.module_utils.action_common import failure, import_pgbatten

from ansible.plugins.action import ActionBase

ARGUMENT_SPEC: dict[str, Any] = {
    "csr": {"type": "str", "required": True},
    "ca_dir": {"type": "path", "required": True},
    "allowed_hosts": {"type": "list", "elements": "str", "default": []},
    "key_types": {"type": "list", "elements": "str", "default": []},
    "days": {"type": "int", "default": 365},
    "name": {"type": "str"},
    "ca_passphrase_file": {"type": "path", "no_log": False},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        import_pgbatten()
        from pgbatten.cli.app import read_secret_file
        from pgbatten.fleet.sign import sign_server_csr
        from pgbatten.pki.csr import CsrPolicy, allowed_key_types

        passphrase_file = args["ca_passphrase_file"]
        try:
            signed = sign_server_csr(
                Path(args["ca_dir"]),
                args["csr"].encode(),
                policy=CsrPolicy(
                    allowed_hosts=tuple(args["allowed_hosts"]),
                    key_types=allowed_key_types(args["key_types"]),
                ),
                days=args["days"],
                name=args["name"] or task_vars.get("inventory_hostname"),
                passphrase=read_secret_file(Path(passphrase_file)) if passphrase_file else None,
                dry_run=bool(self._task.check_mode),
            )
        except Exception as exc:
            result.update(failure(exc))
            return result
        result.update(changed=True, **signed.to_json())
        return result
