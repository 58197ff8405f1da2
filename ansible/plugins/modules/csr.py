#!/usr/bin/python
# Copyright: pgbatten developers
# License: PostgreSQL (see the repository's pyproject.toml)
"""Ansible module: make the server's key on the server and a CSR for it (pgbatten csr)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: csr
short_description: Make a PostgreSQL server's TLS key on the server and a certificate signing request
description:
  - Runs on the database host, with the pgbatten library installed in the host's own Python.
  - Decides whether the installed server certificate can stay (issued by the CA given, names every host
    C(pgbatten secure) would certify, its key beside it, of the key type asked for, not due for renewal).
  - When a new certificate is needed, makes the private key on this host (mode 0600, owned by the cluster's
    owner, beside postgresql.conf as C(pgbatten-server.key.pending)) and returns a CSR for it. The key never
    leaves the host; the control node signs the CSR (M(pgbatten.tls.sign)) and M(pgbatten.tls.secure)
    installs the certificate.
  - A pending key left by an earlier run is reused, so an interrupted rollout can simply be run again.
version_added: 0.1.0
author: pgbatten developers
options:
  pgdata:
    description: The cluster's data directory. One of O(pgdata) and O(cluster) is required.
    type: path
  cluster:
    description: A Debian/Ubuntu cluster as C(VERSION/NAME), e.g. C(15/main).
    type: str
  hosts:
    description: Names and addresses to certify besides the machine's names and the listen addresses.
    type: list
    elements: str
    default: []
  key_type:
    description: The key to make.
    type: str
    choices: [ecdsa-p256, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  ca_certificate:
    description: The CA certificate(s) (PEM text) the installed certificate must come from.
    type: str
  renew_before:
    description: A new certificate is due when less than this is left (C(30d)); default a third of its life.
    type: str
  force:
    description: Make a CSR even when the installed certificate could stay.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Writes no key; says whether a certificate is needed (a CSR only when a pending key exists).
  diff_mode:
    support: none
notes:
  - Requires the pgbatten Python library on the managed host.
"""

EXAMPLES = r"""
- name: Ask for a certificate when the installed one cannot stay
  pgbatten.tls.csr:
    cluster: 15/main
    hosts: [db1.example.com]
    ca_certificate: "{{ trust.ca_certificate }}"
  register: request
"""

RETURN = r"""
needed:
  description: Whether a new certificate is needed.
  returned: always
  type: bool
reasons:
  description: Why it is needed.
  returned: always
  type: list
  elements: str
hosts:
  description: The names and addresses the certificate must carry (the CSR's subjectAltName).
  returned: always
  type: list
  elements: str
csr:
  description: The CSR in PEM, or null when none is needed (or, in check mode, no key exists yet).
  returned: always
  type: str
key_path:
  description: Where the pending private key is (on the host).
  returned: always
  type: str
key_created:
  description: Whether this run made the key (in check mode, whether it would).
  returned: always
  type: bool
installed:
  description: The installed certificate (serial, issuer, sans, not_after, fingerprint_sha256) or null.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pgbatten.tls.plugins.module_utils.pgbatten_common import (
    CLUSTER_ARGS,
    CLUSTER_EXCLUSIVE,
    CLUSTER_ONE_OF,
    discover_cluster,
    fail_on_error,
    pem_bytes,
    require_pgbatten,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CLUSTER_ARGS,
            "hosts": {"type": "list", "elements": "str", "default": []},
            "key_type": {
                "type": "str",
                "default": "ecdsa-p256",
                "choices": ["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"],
            },
            "ca_certificate": {"type": "str"},
            "renew_before": {"type": "str"},
            "force": {"type": "bool", "default": False},
        },
        mutually_exclusive=CLUSTER_EXCLUSIVE,
        required_one_of=CLUSTER_ONE_OF,
        supports_check_mode=True,
    )
    require_pgbatten(module)
    from pgbatten.fleet.request import request_certificate
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import KeyType

    params = module.params
    try:
        result = request_certificate(
            discover_cluster(module),
            hosts=params["hosts"],
            key_type=KeyType.parse(params["key_type"]),
            ca_certificate=pem_bytes(params["ca_certificate"]),
            before=parse_duration(params["renew_before"]) if params["renew_before"] else None,
            force=params["force"],
            dry_run=module.check_mode,
        )
    except Exception as exc:
        fail_on_error(module, exc)
        return
    facts = result.to_json()
    would_create = module.check_mode and result.needed and result.csr is None
    facts["key_created"] = result.key_created or would_create
    module.exit_json(changed=result.key_created or would_create, **facts)


if __name__ == "__main__":
    main()
