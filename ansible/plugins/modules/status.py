#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Ansible module: the TLS lifecycle status of one cluster, as facts (pgbatten status)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: status
short_description: Report a PostgreSQL cluster's certificates, CRL and what to do next, as facts
description:
  - Runs on the database host. Reads the cluster's TLS files and settings, asks the server which certificate
    it really serves, and judges everything as C(pgbatten status) does (levels ok, warning, critical).
  - The CA directory stays on the control node; the CA certificate (and CRL) it hands out is all this needs.
    Give O(ca_dir) instead on a host that holds its own CA.
  - Never changes anything.
version_added: 0.1.0
author: pgbatten developers
options:
  pgdata:
    description: The cluster's data directory. One of O(pgdata) and O(cluster) is required.
    type: path
  cluster:
    description: A Debian/Ubuntu cluster as C(VERSION/NAME), e.g. C(15/main).
    type: str
  ca_certificate:
    description: The CA certificate(s) in PEM, as the control node hands them out.
    type: str
  crl:
    description: The CA's CRL in PEM.
    type: str
  ca_dir:
    description: A CA directory on this host (instead of O(ca_certificate)).
    type: path
  renew_before:
    description: Renewal is due when less than this is left (C(30d)); default a third of the life.
    type: str
  warn:
    description: Warn this long before a certificate ends.
    type: str
    default: 30d
  critical:
    description: Critical this long before a certificate ends.
    type: str
    default: 7d
  timeout:
    description: Seconds per connection.
    type: float
    default: 5.0
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read the TLS status
  pgbatten.tls.status:
    cluster: 15/main
    ca_certificate: "{{ trust.ca_certificate }}"
  register: tls

- name: Renew when due
  ansible.builtin.include_role:
    name: pgbatten.tls.secure
  when: tls.renewal_due or not tls.served_is_installed
"""

RETURN = r"""
level:
  description: ok, warning or critical.
  returned: always
  type: str
exit_status:
  description: What C(pgbatten status) would exit with (0, 1, 2).
  returned: always
  type: int
renewal_due:
  description: Whether the server certificate is due for renewal.
  returned: always
  type: bool
served_is_installed:
  description: Whether the server serves the installed certificate.
  returned: always
  type: bool
ssl:
  description: Whether the server has ssl on.
  returned: always
  type: bool
server_certificate:
  description: The installed server certificate (serial, not_after, state, renew_at, sans, ...), or null.
  returned: always
  type: dict
findings:
  description: One line per finding, worst first.
  returned: always
  type: list
  elements: str
report:
  description: The whole report, as C(pgbatten status --json) prints it.
  returned: always
  type: dict
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgbatten.tls.plugins.module_utils.pgbatten_common import (
    CLUSTER_ARGS,
    CLUSTER_EXCLUSIVE,
    CLUSTER_ONE_OF,
    fail_on_error,
    pem_bytes,
    require_pgbatten,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CLUSTER_ARGS,
            "ca_certificate": {"type": "str"},
            "crl": {"type": "str"},
            "ca_dir": {"type": "path"},
            "renew_before": {"type": "str"},
            "warn": {"type": "str", "default": "30d"},
            "critical": {"type": "str", "default": "7d"},
            "timeout": {"type": "float", "default": 5.0},
        },
        mutually_exclusive=[*CLUSTER_EXCLUSIVE, ("ca_certificate", "ca_dir")],
        required_one_of=[*CLUSTER_ONE_OF, ("ca_certificate", "ca_dir")],
        supports_check_mode=True,
    )
    require_pgbatten(module)
    from pgbatten.fleet.status import cluster_status, status_facts
    from pgbatten.lifecycle import status
    from pgbatten.lifecycle.timeline import Thresholds, Window, parse_duration
    from pgbatten.pki import ClusterRef

    params = module.params
    try:
        thresholds = Thresholds(
            certificate=Window(parse_duration(params["warn"]), parse_duration(params["critical"])),
            renew_before=parse_duration(params["renew_before"]) if params["renew_before"] else None,
        )
        ref = (
            ClusterRef.named(params["cluster"])
            if params["cluster"]
            else ClusterRef.data_directory(Path(params["pgdata"]))
        )
        if params["ca_dir"]:
            report = status(Path(params["ca_dir"]), [ref], thresholds=thresholds, timeout=params["timeout"])
        else:
            report = cluster_status(
                ref,
                ca_certificate=pem_bytes(params["ca_certificate"]) or b"",
                crl=pem_bytes(params["crl"]),
                thresholds=thresholds,
                timeout=params["timeout"],
            )
    except Exception as exc:
        fail_on_error(module, exc)
        return
    module.exit_json(changed=False, **status_facts(report))


if __name__ == "__main__":
    main()
