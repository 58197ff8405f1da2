#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Ansible module: pgbatten renew, where the CA is (client certificates, CRLs, local clusters)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: renew
short_description: Re-issue what is due - client certificates, CRLs, and server certificates of local clusters
description:
  - Runs where the CA is, as C(pgbatten renew) does - the control node (C(delegate_to localhost)) for client
    certificates and the CRL, or a host that holds its own CA for its clusters too.
  - Decides what is due (less than a third of its life left, or O(before)); nothing due writes nothing and
    reports C(changed=false). Server certificates go through the same plan, validation, reload, proofs and
    rollback as M(pgbatten.tls.secure); no session is dropped.
  - With the CA on the control node only, a server's own certificate is renewed by the C(pgbatten.tls.secure)
    role (CSR on the host, signature on the control node), which renews when M(pgbatten.tls.status) says
    C(renewal_due); this module then keeps the client certificates and the CRL the servers install fresh.
version_added: 0.1.0
author: pgbatten developers
options:
  ca_dir:
    description: The pgbatten CA directory.
    type: path
    required: true
  pgdata:
    description: Data directories of clusters on this machine to renew.
    type: list
    elements: path
    default: []
  cluster:
    description: Debian/Ubuntu clusters (C(VERSION/NAME)) on this machine to renew.
    type: list
    elements: str
    default: []
  clients:
    description: Users whose client certificates to renew.
    type: list
    elements: str
    default: []
  all_clients:
    description: Renew every client certificate that is due.
    type: bool
    default: false
  before:
    description: Due when less than this is left (C(30d)); default a third of the life.
    type: str
  days:
    description: Validity of new server certificates.
    type: int
    default: 365
  client_days:
    description: Validity of new client certificates.
    type: int
    default: 365
  crl_days:
    description: Validity of a re-signed CRL.
    type: int
    default: 30
  grace:
    description: How long a replaced client certificate stays valid (C(7d)).
    type: str
  out_dir:
    description: Where fresh client bundles are written.
    type: path
  ca_passphrase_file:
    description: A file holding the CA key's passphrase (read only when something is due).
    type: path
attributes:
  check_mode:
    support: full
    description: Decides and reports what is due, writes nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Keep client certificates and the CRL fresh on the control node
  pgbatten.tls.renew:
    ca_dir: /srv/pki/pgbatten
    all_clients: true
  delegate_to: localhost
  run_once: true
  register: renewed
"""

RETURN = r"""
nothing_due:
  description: Whether nothing was due.
  returned: always
  type: bool
clusters:
  description: Per cluster - due, reasons, applied, old and new serial, proofs, backups, error.
  returned: always
  type: list
  elements: dict
clients:
  description: The client certificates re-issued (user, serials, bundle, revoke_after).
  returned: always
  type: list
  elements: dict
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgbatten.tls.plugins.module_utils.pgbatten_common import (
    fail_on_error,
    require_pgbatten,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "ca_dir": {"type": "path", "required": True},
            "pgdata": {"type": "list", "elements": "path", "default": []},
            "cluster": {"type": "list", "elements": "str", "default": []},
            "clients": {"type": "list", "elements": "str", "default": []},
            "all_clients": {"type": "bool", "default": False},
            "before": {"type": "str"},
            "days": {"type": "int", "default": 365},
            "client_days": {"type": "int", "default": 365},
            "crl_days": {"type": "int", "default": 30},
            "grace": {"type": "str"},
            "out_dir": {"type": "path"},
            "ca_passphrase_file": {"type": "path", "no_log": False},
        },
        supports_check_mode=True,
    )
    require_pgbatten(module)
    from pgbatten.cli.app import read_secret_file
    from pgbatten.lifecycle.export import renew_json
    from pgbatten.lifecycle.renew import RenewOptions, renew
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import ClusterRef

    p = module.params
    log: list[str] = []
    try:
        refs = [ClusterRef.data_directory(Path(d)) for d in p["pgdata"]] + [
            ClusterRef.named(c) for c in p["cluster"]
        ]
        options = RenewOptions(
            clusters=tuple(refs),
            clients=tuple(p["clients"]),
            all_clients=p["all_clients"],
            before=parse_duration(p["before"]) if p["before"] else None,
            days=p["days"],
            client_days=p["client_days"],
            crl_days=p["crl_days"],
            grace=parse_duration(p["grace"]) if p["grace"] else None,
            out_dir=Path(p["out_dir"]) if p["out_dir"] else None,
            dry_run=module.check_mode,
            yes=True,
            ca_passphrase=read_secret_file(Path(p["ca_passphrase_file"]))
            if p["ca_passphrase_file"]
            else None,
        )
        result = renew(Path(p["ca_dir"]), options, log=log.append)
    except Exception as exc:
        fail_on_error(module, exc, log=log)
        return
    facts = renew_json(result)
    changed = bool(facts.pop("changed")) or (module.check_mode and not result.nothing_due)
    failed = facts.pop("failed")
    if failed:
        module.fail_json(msg=f"renewal failed on {', '.join(failed)}", changed=changed, log=log, **facts)
    module.exit_json(changed=changed, log=log, **facts)


if __name__ == "__main__":
    main()
