#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Ansible module: reload PostgreSQL, never restart it (the handler pgbatten's role uses)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: reload
short_description: Reload a PostgreSQL cluster's configuration, never restarting it
description:
  - Runs on the database host. Asks the server to reload, waits until new sessions run on the new files,
    and fails when PostgreSQL could not apply a line of postgresql.conf or pg_hba.conf (it keeps the old
    value then), so that a rollout stops on a bad edit instead of carrying it to the next host.
  - No session is dropped. pgbatten's own modules reload inside their transaction; this is the handler for
    the other tasks of a play.
version_added: 0.1.0
author: pgbatten developers
options:
  pgdata:
    description: The cluster's data directory. One of O(pgdata) and O(cluster) is required.
    type: path
  cluster:
    description: A Debian/Ubuntu cluster as C(VERSION/NAME), e.g. C(15/main).
    type: str
attributes:
  check_mode:
    support: full
    description: Does nothing in check mode.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Reload PostgreSQL
  pgbatten.tls.reload:
    cluster: 15/main
"""

RETURN = r"""
conf_load_time:
  description: When the server last loaded its configuration.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgbatten.tls.plugins.module_utils.pgbatten_common import (
    CLUSTER_ARGS,
    CLUSTER_EXCLUSIVE,
    CLUSTER_ONE_OF,
    discover_cluster,
    fail_on_error,
    require_pgbatten,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=CLUSTER_ARGS,
        mutually_exclusive=CLUSTER_EXCLUSIVE,
        required_one_of=CLUSTER_ONE_OF,
        supports_check_mode=True,
    )
    require_pgbatten(module)
    if module.check_mode:
        module.exit_json(changed=True)
    from pgbatten.fleet.reload import reload_cluster

    try:
        reloaded = reload_cluster(discover_cluster(module))
    except Exception as exc:
        fail_on_error(module, exc)
        return
    module.exit_json(changed=True, **reloaded.to_json())


if __name__ == "__main__":
    main()
