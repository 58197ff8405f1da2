# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Action plugin: ``pgbatten check`` from the control node against the host the task runs for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible_collections.pgbatten.tls.plugins.module_utils.action_common import failure, import_pgbatten

from ansible.plugins.action import ActionBase

ARGUMENT_SPEC: dict[str, Any] = {
    "host": {"type": "str"},
    "hostaddr": {"type": "str"},
    "port": {"type": "int", "default": 5432},
    "ca_certificate": {"type": "path"},
    "ca_dir": {"type": "path"},
    "crl": {"type": "path"},
    "quick": {"type": "bool", "default": True},
    "timeout": {"type": "float", "default": 5.0},
    "fail_on": {"type": "str", "default": "high", "choices": ["high", "medium", "never"]},
    "min_grade": {"type": "str", "choices": ["A+", "A", "B", "C", "F"]},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC, mutually_exclusive=[("ca_certificate", "ca_dir")]
        )
        import_pgbatten()
        from pgbatten.fleet.check import check_facts, check_server, verdict

        host = args["host"] or task_vars.get("inventory_hostname")
        hostaddr = args["hostaddr"]
        if hostaddr is None and "ansible_host" in task_vars:
            hostaddr = self._templar.template(task_vars["ansible_host"])
        ca_file, crl_file = args["ca_certificate"], args["crl"]
        if args["ca_dir"]:
            ca_dir = Path(args["ca_dir"])
            roots = ca_dir / "roots.crt"
            ca_file = str(roots if roots.exists() else ca_dir / "ca.crt")
            if crl_file is None and (ca_dir / "crl.pem").exists():
                crl_file = str(ca_dir / "crl.pem")
        try:
            checked = check_server(
                str(host),
                port=args["port"],
                hostaddr=str(hostaddr) if hostaddr else None,
                ca_file=Path(ca_file) if ca_file else None,
                crl_file=Path(crl_file) if crl_file else None,
                quick=args["quick"],
                timeout=args["timeout"],
            )
            stop = verdict(checked, fail_on=args["fail_on"], min_grade=args["min_grade"])
        except Exception as exc:
            result.update(failure(exc))
            return result
        result.update(changed=False, **check_facts(checked))
        if stop is not None:
            result.update(failed=True, msg=f"pgbatten check from the control node: {stop}")
        return result
